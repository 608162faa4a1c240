"""Typed options persisted to config.json, applied without a restart.

One `Settings` object is owned by the app and passed to whoever needs it (no module globals).
Keys use A1111's option names so `/sdapi/v1/options` and `override_settings` from A1111 clients work.
"""
from __future__ import annotations

import logging

import json
import os
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from webui.fsutil import normal_mode

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class OptionInfo:
    default: Any
    label: str
    section: str
    component: str = "textbox"  # textbox | number | slider | checkbox | dropdown
    choices: tuple[Any, ...] | None = None
    minimum: float | None = None
    maximum: float | None = None
    step: float | None = None
    # Infotext key that carries this option (A1111 pastes these into "Override settings").
    infotext: str | None = None


OPTIONS: dict[str, OptionInfo] = {
    "sd_model_checkpoint": OptionInfo(None, "Stable Diffusion checkpoint", "Stable Diffusion", "dropdown",
                                      infotext="Model hash"),
    "sd_vae": OptionInfo("Automatic", "SD VAE (Automatic: <checkpoint>.vae.* if present; None: the checkpoint's "
                                      "own; or a file from models/VAE)", "Stable Diffusion", "dropdown",
                         infotext="VAE"),
    "sd_checkpoints_limit": OptionInfo(1, "Maximum number of checkpoints loaded at the same time (kept in RAM; "
                                          "switching back to one is instant)", "Stable Diffusion", "slider",
                                       minimum=1, maximum=10, step=1),
    "gpu_weights_mb": OptionInfo(0, "GPU weights (MB): most model weight memory kept on the GPU; the rest is "
                                    "streamed from RAM (0 = decided from free VRAM)", "Memory", "number",
                                 minimum=0, maximum=1048576, step=64),
    "lora_cache_mb": OptionInfo(256, "LoRA files kept in RAM (MB): read files stay in their own dtype, the least "
                                     "recently used is dropped first (0 = read the file at every use)", "Memory",
                                "number", minimum=0, maximum=65536, step=16),
    "control_net_unit_count": OptionInfo(3, "Multi-ControlNet: ControlNet unit number", "ControlNet", "slider",
                                         minimum=1, maximum=10, step=1),
    "CLIP_stop_at_last_layers": OptionInfo(1, "Clip skip", "Stable Diffusion", "slider",
                                           minimum=1, maximum=12, step=1, infotext="Clip skip"),
    "emphasis": OptionInfo("Original", "Emphasis mode: how (word:1.2) weights change the conditioning",
                           "Stable Diffusion", "dropdown", choices=("Original", "No norm", "Ignore", "None"),
                           infotext="Emphasis"),
    "comma_padding_backtrack": OptionInfo(20, "Prompt word wrap length limit (tokens moved to the next 75-token "
                                              "chunk after the last comma)", "Stable Diffusion", "slider",
                                          minimum=0, maximum=74, step=1),
    "use_old_scheduling": OptionInfo(False, "Use old prompt editing timelines", "Compatibility", "checkbox",
                                     infotext="Old prompt editing timelines"),
    "eta_ancestral": OptionInfo(1.0, "Eta for ancestral samplers (noise multiplier)", "Sampler parameters",
                                "slider", minimum=0.0, maximum=1.0, step=0.01, infotext="Eta"),
    "eta_noise_seed_delta": OptionInfo(0, "Eta noise seed delta (ENSD)", "Sampler parameters", "number",
                                       infotext="ENSD"),
    "always_discard_next_to_last_sigma": OptionInfo(False, "Always discard next-to-last sigma",
                                                    "Sampler parameters", "checkbox"),
    "samples_save": OptionInfo(True, "Always save all generated images", "Saving images", "checkbox"),
    "grid_save": OptionInfo(True, "Always save all generated image grids", "Saving images", "checkbox"),
    "samples_format": OptionInfo("png", "File format for images", "Saving images", "dropdown",
                                 choices=("png", "jpg", "webp")),
    "return_grid": OptionInfo(True, "Show grid in gallery (and first in the API's images)", "Saving images",
                              "checkbox"),
    "enable_pnginfo": OptionInfo(True, "Save text information about generation parameters as chunks to png files",
                                 "Saving images", "checkbox"),
    # the 💾 / 🗜️ buttons under the gallery (webui.ui.gallery_buttons)
    "save_selected_only": OptionInfo(True, "💾 under the gallery saves only the selected picture (every picture "
                                           "while the grid is selected)", "Saving images", "checkbox"),
    "save_write_log_csv": OptionInfo(True, "💾 also adds a row to log.csv in its folder", "Saving images",
                                     "checkbox"),
    "use_save_to_dirs_for_ui": OptionInfo(False, "💾 saves into a dated subfolder (YYYY-MM-DD)", "Saving images",
                                          "checkbox"),
    "outdir_txt2img_samples": OptionInfo("", "Output directory for txt2img images (empty = outputs/txt2img-images)",
                                         "Paths for saving"),
    "outdir_txt2img_grids": OptionInfo("", "Output directory for txt2img grids (empty = outputs/txt2img-grids)",
                                       "Paths for saving"),
    "outdir_img2img_samples": OptionInfo("", "Output directory for img2img images (empty = outputs/img2img-images)",
                                         "Paths for saving"),
    "outdir_img2img_grids": OptionInfo("", "Output directory for img2img grids (empty = outputs/img2img-grids)",
                                       "Paths for saving"),
    "outdir_extras_samples": OptionInfo("", "Output directory for images from extras (empty = outputs/extras-images)",
                                        "Paths for saving"),
    "outdir_save": OptionInfo("log/images", "Folder the 💾 button saves to (a relative path is inside the data "
                                            "folder)", "Paths for saving"),
    "ESRGAN_tile": OptionInfo(192, "Tile size for model upscalers (ESRGAN, Real-ESRGAN, SwinIR, DAT, HAT); 0 = no tiling",
                              "Upscaling", "slider", minimum=0, maximum=512, step=16),
    "ESRGAN_tile_overlap": OptionInfo(8, "Tile overlap for model upscalers, in pixels (low values = visible seams)",
                                      "Upscaling", "slider", minimum=0, maximum=48, step=1),
    "initial_noise_multiplier": OptionInfo(1.0, "Noise multiplier for img2img", "img2img", "slider",
                                           minimum=0.0, maximum=1.5, step=0.001, infotext="Noise multiplier"),
    "img2img_extra_noise": OptionInfo(0.0, "Extra noise multiplier for img2img and hires fix (noise added on top "
                                           "of the start latent; extensions see it in on_extra_noise)", "img2img",
                                      "slider", minimum=0.0, maximum=1.0, step=0.01, infotext="Extra noise"),
    "inpainting_mask_weight": OptionInfo(1.0, "Inpainting conditioning mask strength (9-channel inpainting models)",
                                         "img2img", "slider", minimum=0.0, maximum=1.0, step=0.01,
                                         infotext="Conditional mask weight"),
    "img2img_background_color": OptionInfo("#ffffff", "With img2img, fill transparent parts of the input image "
                                                      "with this colour", "img2img"),
    "img2img_fix_steps": OptionInfo(False, "With img2img, do exactly the amount of steps the slider specifies "
                                           "(normally you'd do less with less denoising)", "img2img", "checkbox"),
    "img2img_sketch_default_brush_color": OptionInfo("#ffffff", "Sketch initial brush color", "img2img"),
    "img2img_inpaint_mask_brush_color": OptionInfo("#ffffff", "Inpaint mask brush color", "img2img"),
    "live_previews_enable": OptionInfo(True, "Show live previews of the created image", "Live previews", "checkbox"),
    "show_progress_every_n_steps": OptionInfo(10, "Live preview display period (in sampling steps, -1 = only at end)",
                                              "Live previews", "slider", minimum=-1, maximum=32, step=1),
    "interrupt_after_current": OptionInfo(True, "Don't interrupt in the middle of an image when generating several",
                                          "User interface", "checkbox"),
    "samplers_in_dropdown": OptionInfo(True, "Use dropdown for sampler selection", "User interface", "checkbox"),
    "open_dir_button_choice": OptionInfo("Subdirectory", "📂 under the gallery opens the output folder's root, or "
                                                         "the subfolder the shown pictures were saved in",
                                         "User interface", "radio",
                                         choices=("Output Root", "Subdirectory", "Subdirectory (even temp dir)")),
    # choices: the localization files found (webui/ui/localization.py registers them at startup)
    "localization": OptionInfo("None", "Localization (a file of localizations/ in the data dir or an extension; "
                                       "reload the page to apply)", "User interface", "dropdown"),
    "theme_mode": OptionInfo("system", "Light or dark page (system: as the browser prefers; the --theme flag "
                                       "wins; reload the page to apply)", "User interface", "radio",
                             choices=("system", "light", "dark")),
    "gradio_theme": OptionInfo("Default", "Gradio theme (the themes Gradio ships; restart to apply)",
                               "User interface", "dropdown",
                               choices=("Default", "Base", "Soft", "Glass", "Monochrome", "Origin", "Citrus",
                                        "Ocean")),
    # ---- the quicksettings row and the tabs, read when the page is built (webui/ui/quicksettings.py) ----
    # choices are filled in at page build: every option key, and the tab names found
    "quicksettings_list": OptionInfo(("sd_model_checkpoint",), "Quicksettings list (setting entries that appear at "
                                                              "the top of page as well as in the Settings tab; "
                                                              "requires Reload UI)", "User interface",
                                     "multiselect"),
    "ui_tab_order": OptionInfo((), "UI tab order (these tabs first, in this order; requires Reload UI)",
                               "User interface", "multiselect"),
    "hidden_tabs": OptionInfo((), "Hidden UI tabs (Settings always stays visible, so the tabs can be shown "
                                  "again; requires Reload UI)", "User interface", "multiselect"),
    "disabled_extensions": OptionInfo((), "Disabled extensions (folder names)", "Extensions", "multiselect"),
    "disable_all_extensions": OptionInfo("none", "Disable all extensions (preserves the list of disabled "
                                                 "extensions)", "Extensions", "radio",
                                         choices=("none", "extra", "all")),
    # ---- the page's keyboard and button habits (webui/ui/page_habits.py; A1111's keys, labels, defaults) ----
    "keyedit_precision_attention": OptionInfo(0.1, "Precision for (attention:1.1) when editing the prompt with "
                                                   "Ctrl+up/down", "Prompt editing", "slider",
                                              minimum=0.01, maximum=0.2, step=0.001),
    "keyedit_precision_extra": OptionInfo(0.05, "Precision for <extra networks:0.9> when editing the prompt with "
                                                "Ctrl+up/down", "Prompt editing", "slider",
                                          minimum=0.01, maximum=0.2, step=0.001),
    "keyedit_delimiters": OptionInfo(r".,\/!?%^*;:{}=`~() ", "Word delimiters when editing the prompt with "
                                                             "Ctrl+up/down", "Prompt editing"),
    "keyedit_delimiters_whitespace": OptionInfo(("Tab", "Carriage Return", "Line Feed"),
                                                "Ctrl+up/down whitespace delimiters", "Prompt editing", "multiselect",
                                                choices=("Tab", "Carriage Return", "Line Feed")),
    "keyedit_move": OptionInfo(True, "Alt+left/right moves prompt elements", "Prompt editing", "checkbox"),
    "notification_audio": OptionInfo(True, "Play notification sound after image generation (notification.mp3 "
                                           "in the data dir; reload the page to apply)", "Saving images",
                                     "checkbox"),
    "notification_volume": OptionInfo(100, "Notification sound volume (in %)", "Saving images", "slider",
                                      minimum=0, maximum=100, step=1),
    "show_progress_in_title": OptionInfo(True, "Show generation progress in window title.", "User interface",
                                         "checkbox"),
    # ---- options the generation pipeline reads (A1111's keys, defaults and infotext names) ----
    # randn_source: A1111's default is "GPU"; ours stays "CPU". Decided so because
    # * here "GPU" on a machine without CUDA draws the NV source (CUDA's Philox numbers, so that "GPU" images
    #   match A1111 on an NVIDIA card), where A1111 falls back to CPU randn: with "GPU" as the default every
    #   fresh image of a given seed would change on every machine, including the seeds the tests
    #   (test_default_model judges seeds 1 and 2), the bench and the README's figures were measured with;
    # * "CPU" is bit-exact whatever the device (NV is ~2e-7 from CUDA's randn; GPU depends on the card);
    # * exchange with A1111 does not depend on the default: A1111 omits RNG when it is GPU, the parser then
    #   inserts "RNG: GPU" and pasting overrides randn_source to GPU (chip "RNG: GPU"); our infotexts say
    #   "RNG: CPU" (always so far), which A1111 pastes as an override to CPU.
    # The cost: a seed copied from an A1111 user without the infotext draws other noise unless GPU is chosen.
    "randn_source": OptionInfo("CPU", "Random number generator source (changes seeds drastically; CPU gives "
                                      "the same picture on every kind of device; GPU and NV give what A1111 "
                                      "draws on NVIDIA cards; A1111's default is GPU)", "Stable Diffusion",
                               "dropdown", choices=("GPU", "CPU", "NV"), infotext="RNG"),
    "use_downcasted_alpha_bar": OptionInfo(False, "Downcast model alphas_cumprod to fp16 before sampling. For "
                                                  "reproducing old seeds.", "Compatibility", "checkbox",
                                           infotext="Downcast alphas_cumprod"),
    "face_restoration": OptionInfo(False, "Restore faces (a third-party model reconstructs faces in the result)",
                                   "Face restoration", "checkbox", infotext="Face restoration"),
    "face_restoration_model": OptionInfo("CodeFormer", "Face restoration model", "Face restoration", "dropdown",
                                         choices=("CodeFormer", "GFPGAN")),
    "code_former_weight": OptionInfo(0.5, "CodeFormer weight (0 = maximum effect; 1 = minimum effect)",
                                     "Face restoration", "slider", minimum=0.0, maximum=1.0, step=0.01),
    "s_min_uncond": OptionInfo(0.0, "Negative Guidance minimum sigma (skip the negative prompt for some steps when "
                                    "the image is almost ready; 0 = disable, higher = faster)", "Optimizations",
                               "slider", minimum=0.0, maximum=15.0, step=0.01, infotext="NGMS"),
    "eta_ddim": OptionInfo(0.0, "Eta for DDIM (noise multiplier; higher = more unpredictable results)",
                           "Sampler parameters", "slider", minimum=0.0, maximum=1.0, step=0.01, infotext="Eta DDIM"),
    "s_churn": OptionInfo(0.0, "sigma churn (amount of stochasticity; only applies to Euler, Heun, and DPM2)",
                          "Sampler parameters", "slider", minimum=0.0, maximum=100.0, step=0.01,
                          infotext="Sigma churn"),
    "s_tmin": OptionInfo(0.0, "sigma tmin (enable stochasticity; start value of the sigma range; only applies to "
                              "Euler, Heun, and DPM2)", "Sampler parameters", "slider", minimum=0.0, maximum=10.0,
                         step=0.01, infotext="Sigma tmin"),
    "s_tmax": OptionInfo(0.0, "sigma tmax (0 = inf; end value of the sigma range; only applies to Euler, Heun, "
                              "and DPM2)", "Sampler parameters", "slider", minimum=0.0, maximum=999.0, step=0.01,
                         infotext="Sigma tmax"),
    "s_noise": OptionInfo(1.0, "sigma noise (amount of additional noise to counteract loss of detail during "
                               "sampling)", "Sampler parameters", "slider", minimum=0.0, maximum=1.1, step=0.001,
                          infotext="Sigma noise"),
    "override_settings_restore_afterwards": OptionInfo(True, "Restore settings overridden by a request or a pasted "
                                                             "infotext after its generation",
                                                       "Stable Diffusion", "checkbox"),
    "generation_max_pixels": OptionInfo(64 * 1024 * 1024, "Maximum pixels one generation request may ask for "
                                                          "(width × height × batch size × batch count; larger "
                                                          "requests are refused)", "Stable Diffusion", "number",
                                        minimum=64 * 64, step=1),
    # ---- options wired to features that exist here (helper E2: A1111 1.10's keys, defaults and labels) ----
    "grid_prevent_empty_spots": OptionInfo(False, "Prevent empty spots in grid (when set to autodetect)",
                                           "Saving images", "checkbox"),
    "font": OptionInfo("", "Font for image grids that have text (a .ttf/.otf file; empty = DejaVu Sans)",
                       "Saving images"),
    "grid_text_active_color": OptionInfo("#000000", "Text color for image grids", "Saving images"),
    "grid_text_inactive_color": OptionInfo("#999999", "Inactive text color for image grids", "Saving images"),
    "grid_background_color": OptionInfo("#ffffff", "Background color for image grids", "Saving images"),
    "sdxl_clip_l_skip": OptionInfo(False, "Clip skip SDXL (enable Clip skip for the secondary clip model in sdxl; "
                                          "has no effect on SD 1.5 or SD 2.0/2.1)", "Stable Diffusion", "checkbox"),
    "hires_fix_refiner_pass": OptionInfo("second pass", "Hires fix: which pass to enable refiner for",
                                         "Stable Diffusion", "radio",
                                         choices=("first pass", "second pass", "both passes"),
                                         infotext="Hires refiner"),
    "sdxl_crop_top": OptionInfo(0, "crop top coordinate", "Stable Diffusion XL", "number", minimum=0, step=1),
    "sdxl_crop_left": OptionInfo(0, "crop left coordinate", "Stable Diffusion XL", "number", minimum=0, step=1),
    "auto_vae_precision_bfloat16": OptionInfo(False, "Automatically convert VAE to bfloat16 (when the VAE gives NaNs; "
                                                     "if enabled, overrides the option below)", "VAE", "checkbox"),
    "auto_vae_precision": OptionInfo(True, "Automatically revert VAE to 32-bit floats (when the VAE gives NaNs; "
                                           "off: the generation fails with an error)", "VAE", "checkbox"),
    "img2img_inpaint_sketch_default_brush_color": OptionInfo("#ffffff", "Inpaint sketch initial brush color "
                                                                        "(requires Reload UI)", "img2img"),
    "overlay_inpaint": OptionInfo(True, "Overlay original for inpaint (when inpainting, overlay the original image "
                                        "over the areas that weren't inpainted)", "img2img", "checkbox"),
    "extra_networks_default_multiplier": OptionInfo(1.0, "Default multiplier for extra networks", "Extra Networks",
                                                    "slider", minimum=0.0, maximum=2.0, step=0.01),
    "extra_networks_add_text_separator": OptionInfo(" ", "Extra networks separator (extra text to add before <...> "
                                                         "when adding extra network to prompt)", "Extra Networks"),
    "textual_inversion_add_hashes_to_infotext": OptionInfo(True, "Add Textual Inversion hashes to infotext",
                                                           "Extra Networks", "checkbox"),
    "disable_token_counters": OptionInfo(False, "Disable prompt token counters (requires Reload UI)",
                                         "Prompt editing", "checkbox"),
    "include_styles_into_token_counters": OptionInfo(True, "Count tokens of enabled styles (when calculating how "
                                                           "many tokens the prompt has, also consider tokens added "
                                                           "by enabled styles)", "Prompt editing", "checkbox"),
    "disable_weights_auto_swap": OptionInfo(True, "Disregard checkpoint information from pasted infotext (when "
                                                  "reading generation parameters from text into UI)", "Infotext",
                                            "checkbox"),
    "infotext_skip_pasting": OptionInfo((), "Disregard fields from pasted infotext", "Infotext", "multiselect",
                                        choices=("Prompt", "Negative prompt", "Steps", "Sampler", "Schedule type",
                                                 "CFG scale", "Image CFG scale", "Seed", "Variation seed",
                                                 "Variation seed strength", "Seed resize from-1",
                                                 "Seed resize from-2", "Size-1", "Size-2", "Denoising strength",
                                                 "Styles array", "Model hash", "VAE", "Clip skip", "Emphasis", "RNG",
                                                 "ENSD", "Eta", "Eta DDIM", "NGMS", "Sigma churn", "Sigma tmin",
                                                 "Sigma tmax", "Sigma noise", "Schedule min sigma",
                                                 "Schedule max sigma", "Schedule rho", "Beta schedule alpha",
                                                 "Beta schedule beta", "Face restoration", "Tiling", "Hires upscale",
                                                 "Hires upscaler", "Hires steps", "Hires resize-1", "Hires resize-2",
                                                 "Hires sampler", "Hires schedule type", "Hires checkpoint",
                                                 "Hires prompt", "Hires negative prompt", "Hires refiner", "Refiner",
                                                 "Refiner switch at", "Mask blur", "Noise multiplier", "Extra noise",
                                                 "Conditional mask weight")),
    "infotext_styles": OptionInfo("Apply if any", "Infer styles from prompts of pasted infotext (Ignore: keep prompt "
                                                  "and styles as they are; Apply: take style text out of the prompt "
                                                  "and set the styles found, even none; Discard: take it out, keep "
                                                  "the styles; Apply if any: take it out, set styles if any found)",
                                  "Infotext", "radio", choices=("Ignore", "Apply", "Discard", "Apply if any")),
    "hide_samplers": OptionInfo((), "Hide samplers in user interface (requires Reload UI)",
                                "Sampler parameters", "multiselect",
                                choices=("DPM++ 2M", "DPM++ SDE", "DPM++ 2M SDE", "DPM++ 2M SDE Heun", "DPM++ 2S a",
                                         "DPM++ 3M SDE", "Euler a", "Euler", "LMS", "Heun", "DPM2", "DPM2 a",
                                         "DPM fast", "DPM adaptive", "Restart", "DDIM", "PLMS", "UniPC", "LCM")),
    "sigma_min": OptionInfo(0.0, "sigma min (0 = default (~0.03); minimum noise strength for k-diffusion noise "
                                 "scheduler)", "Sampler parameters", "number", minimum=0.0,
                            infotext="Schedule min sigma"),
    "sigma_max": OptionInfo(0.0, "sigma max (0 = default (~14.6); maximum noise strength for k-diffusion noise "
                                 "scheduler)", "Sampler parameters", "number", minimum=0.0,
                            infotext="Schedule max sigma"),
    "rho": OptionInfo(0.0, "rho (0 = default (7 for karras, 1 for polyexponential); higher values result in a "
                           "steeper noise schedule (decreases faster))", "Sampler parameters", "number", minimum=0.0,
                      infotext="Schedule rho"),
    # A1111 writes "Beta schedule alpha/beta" into the infotext (its options name "Beta scheduler ..."); the
    # written names are used here so that a pasted infotext brings the values back
    "beta_dist_alpha": OptionInfo(0.6, "Beta scheduler - alpha (the alpha parameter of the beta distribution used "
                                       "in Beta sampling)", "Sampler parameters", "slider", minimum=0.01,
                                  maximum=1.0, step=0.01, infotext="Beta schedule alpha"),
    "beta_dist_beta": OptionInfo(0.6, "Beta scheduler - beta (the beta parameter of the beta distribution used in "
                                      "Beta sampling)", "Sampler parameters", "slider", minimum=0.01, maximum=1.0,
                                 step=0.01, infotext="Beta schedule beta"),
    "interrogate_keep_models_in_memory": OptionInfo(False, "Keep models in VRAM", "Interrogate", "checkbox"),
    "interrogate_return_ranks": OptionInfo(False, "Include ranks of model tags matches in results.", "Interrogate",
                                           "checkbox"),
    "interrogate_clip_num_beams": OptionInfo(1, "BLIP: num_beams", "Interrogate", "slider", minimum=1, maximum=16,
                                             step=1),
    "interrogate_clip_min_length": OptionInfo(24, "BLIP: minimum description length", "Interrogate", "slider",
                                              minimum=1, maximum=128, step=1),
    "interrogate_clip_max_length": OptionInfo(48, "BLIP: maximum description length", "Interrogate", "slider",
                                              minimum=1, maximum=256, step=1),
    "interrogate_clip_dict_limit": OptionInfo(1500, "CLIP: maximum number of lines in text file (0 = No limit)",
                                              "Interrogate", "number", minimum=0, step=1),
    "interrogate_clip_skip_categories": OptionInfo((), "CLIP: skip inquire categories (file names in "
                                                       "models/interrogate, without .txt)", "Interrogate",
                                                   "multiselect"),
    # ---- end of helper E2's block ----
    # ---- Training (A1111's keys and defaults; only those the trainers act on) ----
    "save_optimizer_state": OptionInfo(False, "Save the optimizer state as a separate *.optim file beside an "
                                              "embedding or hypernetwork, so training resumes where it stopped",
                                       "Training", "checkbox"),
    "save_training_settings_to_txt": OptionInfo(True, "Save the training settings to a settings-<time>.json file "
                                                      "in the log directory whenever training starts",
                                                "Training", "checkbox"),
    "dataset_filename_word_regex": OptionInfo("", "Filename word regex (captions from file names: keep only "
                                                  "its matches)", "Training"),
    "dataset_filename_join_string": OptionInfo(" ", "Filename join string (joins the regex's matches)",
                                               "Training"),
    "training_image_repeats_per_epoch": OptionInfo(1, "Number of repeats for a single input image per epoch",
                                                   "Training", "number", minimum=1, step=1),
    "training_write_csv_every": OptionInfo(500, "Save a csv containing the loss to the log directory every N "
                                                "steps, 0 to disable", "Training", "number", minimum=0, step=1),
    # --- Server: what one user may ask of a shared server (webui/services/limits.py; 0 = no limit)
    "queue_max_jobs_per_user": OptionInfo(0, "Maximum queued jobs per user (more are refused with 429; "
                                             "0 = no limit)", "Server", "number", minimum=0, step=1),
    "max_images_per_request": OptionInfo(0, "Maximum images per request (batch size × batch count; "
                                            "0 = no limit)", "Server", "number", minimum=0, step=1),
    "max_training_jobs": OptionInfo(0, "Maximum training jobs at once, queued or running (0 = no limit)",
                                    "Server", "number", minimum=0, step=1),
}


class SettingsError(ValueError):
    pass


class UnknownOptionError(SettingsError):
    """Keys that are no registered option (a typo, or an option of an extension that is not loaded)."""

    def __init__(self, keys: list[str]) -> None:
        self.keys = list(keys)
        super().__init__(f"unknown option{'s' if len(self.keys) > 1 else ''}: {', '.join(self.keys)}")


@dataclass
class Settings:
    """Option values, persisted to config.json.

    `options` is this object's table of known options: a copy of OPTIONS made when it is created, to
    which extensions add theirs with `register_option` (OPTIONS itself is never changed, so two
    Settings objects, e.g. two apps in one test process, do not share registrations). Only known
    keys can be set; values of keys nobody registered that an existing config.json holds (an
    extension's, saved before it registers, or one that is not installed now) are kept and
    written back untouched. None is never stored: it means "not set" (the option's default).
    """
    path: Path
    values: dict[str, Any] = field(default_factory=dict)
    options: dict[str, OptionInfo] = field(default_factory=lambda: dict(OPTIONS))
    _lock: threading.RLock = field(default_factory=threading.RLock, repr=False)
    _listeners: dict[str, list[Callable[[Any], None]]] = field(default_factory=dict, repr=False)
    # checks a new value must pass besides its type (e.g. serving.path_guard on outdir_* options)
    _value_checks: list[Callable[[str, Any], None]] = field(default_factory=list, repr=False)

    @classmethod
    def load(cls, path: Path) -> "Settings":
        values: dict[str, Any] = {}
        if path.exists():
            try:
                values = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError) as e:
                # A broken config must not stop the app; keep the file for the user to inspect.
                log.warning("config.json unreadable (%s); using defaults", e)
                values = {}
        if not isinstance(values, dict):
            values = {}
        # nulls written by older versions (restored overrides of keys they did not know) mean "not set"
        return cls(path=path, values={k: v for k, v in values.items() if v is not None})

    # ---- the table of known options ----
    def register_option(self, key: str, info: OptionInfo) -> None:
        """Make `key` a known option of this Settings object (an extension's `on_ui_settings`).

        Registering a key again replaces its OptionInfo. A value config.json already holds for the
        key is kept; if it no longer fits the option (wrong type, out of range) it is dropped, with
        a message, so the default applies."""
        if not isinstance(key, str) or not key:
            raise SettingsError(f"option key must be a non-empty string, not {key!r}")
        if not isinstance(info, OptionInfo):
            raise SettingsError(f"option {key}: expected an OptionInfo, not {type(info).__name__}")
        with self._lock:
            self.options[key] = info
            if key in self.values:
                try:
                    self.values[key] = self.coerce(key, self.values[key])
                except SettingsError as e:
                    log.warning("config.json: %s; using the default %r", e, info.default)
                    del self.values[key]

    def unregister_option(self, key: str) -> None:
        """An unloaded extension's option is no longer known; a value config.json holds for it is
        kept and written back untouched, as for any extension that is not installed."""
        with self._lock:
            self.options.pop(key, None)

    def is_known(self, key: str) -> bool:
        return key in self.options

    def unknown_keys(self, keys: Any) -> list[str]:
        """The keys among `keys` that are no registered option, in their order."""
        return [k for k in keys if k not in self.options]

    # ---- values ----
    def get(self, key: str) -> Any:
        with self._lock:
            if key in self.values:
                return self.values[key]
            info = self.options.get(key)
            return info.default if info else None

    def all(self) -> dict[str, Any]:
        with self._lock:
            out = {k: info.default for k, info in self.options.items()}
            out.update(self.values)
            return out

    def coerce(self, key: str, value: Any) -> Any:
        """`value` converted to the option's type and checked against its range and choices.
        Unknown keys raise UnknownOptionError (A1111 would store them; then nothing reads them)."""
        info = self.options.get(key)
        if info is None:
            raise UnknownOptionError([key])
        d = info.default
        if value is None:
            return None
        if isinstance(d, (list, tuple)):
            if isinstance(value, str):
                value = [value]
            if not isinstance(value, (list, tuple)) or not all(isinstance(x, str) for x in value):
                raise SettingsError(f"option {key}: {value!r} is not a list of names")
            return list(value)
        try:
            if isinstance(d, bool):
                if isinstance(value, str):
                    return value.strip().lower() in ("1", "true", "yes", "on")
                return bool(value)
            if isinstance(d, int) and not isinstance(d, bool):
                v = int(float(value))
            elif isinstance(d, float):
                v = float(value)
            else:
                v = value
        except (TypeError, ValueError):
            raise SettingsError(f"option {key}: {value!r} is not a valid {type(d).__name__}") from None
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            if info.minimum is not None and v < info.minimum or info.maximum is not None and v > info.maximum:
                if info.maximum is None or info.minimum is None:  # one bound: name it alone
                    bound = f"below the minimum {info.minimum}" if info.maximum is None else \
                        f"above the maximum {info.maximum}"
                    raise SettingsError(f"option {key}: {v} is {bound}")
                raise SettingsError(f"option {key}: {v} is outside {info.minimum}..{info.maximum}")
        if info.choices and v not in info.choices:
            raise SettingsError(f"option {key}: {v!r} is not one of {list(info.choices)}")
        if self._value_checks and v != self.get(key):  # the value already held passes (a client
            for check in self._value_checks:           # posting every option back unchanged)
                try:
                    check(key, v)
                except ValueError as e:
                    raise SettingsError(str(e)) from None
        return v

    def add_value_check(self, check: Callable[[str, Any], None]) -> None:
        """`check(key, value)` raises ValueError for a value that must not be set; every new value
        passes it (POST /options, the Settings tab, override_settings)."""
        self._value_checks.append(check)

    def on_change(self, key: str, fn: Callable[[Any], None]) -> None:
        with self._lock:
            self._listeners.setdefault(key, []).append(fn)

    def remove_listeners(self, predicate: Callable[[Callable[[Any], None]], bool]) -> int:
        """Forget the change listeners `predicate` selects (unloaded extensions'); returns how many."""
        with self._lock:
            n = 0
            for key, fns in self._listeners.items():
                kept = [fn for fn in fns if not predicate(fn)]
                n += len(fns) - len(kept)
                self._listeners[key] = kept
            return n

    def set(self, key: str, value: Any, *, save: bool = True, notify: bool = True) -> None:
        self.update({key: value}, save=save, notify=notify)

    def update(self, changes: dict[str, Any], *, save: bool = True, notify: bool = True) -> None:
        """Validate everything first so a bad value (or an unknown key) changes nothing; listeners
        run before the value is stored, so a failing model switch leaves the old setting in place.

        Listeners run without the settings lock held: a listener may take long (a model switch) and
        may read or set settings itself, from its own thread or another, while other requests read
        settings meanwhile.

        A value of None un-sets the key (its default applies again) and is never stored: restoring
        a temporary override of a key that had no value must not leave `"key": null` in config.json."""
        unknown = self.unknown_keys(k for k, v in changes.items() if v is not None)
        if unknown:
            raise UnknownOptionError(unknown)
        coerced = {k: (None if v is None else self.coerce(k, v)) for k, v in changes.items()}
        for k, v in coerced.items():
            with self._lock:
                if v is None:
                    info = self.options.get(k)
                    new = info.default if info is not None else None
                    changed = k in self.values and self.values[k] != new
                else:
                    new, changed = v, self.get(k) != v
                listeners = list(self._listeners.get(k, [])) if notify and changed else []
            for fn in listeners:
                fn(new)
            with self._lock:
                if v is None:
                    self.values.pop(k, None)
                else:
                    self.values[k] = v
        if save:
            self.save()

    def save(self) -> None:
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".config-", suffix=".tmp")
            normal_mode(fd)  # config.json stays readable like any file we write
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump({k: v for k, v in self.values.items() if v is not None}, f, indent=4, ensure_ascii=False)
            os.replace(tmp, self.path)


# A1111's saving / infotext / sending options live in their own table (settings_output.py)
from webui.settings_output import OUTPUT_OPTIONS  # noqa: E402

OPTIONS.update(OUTPUT_OPTIONS)
