"""A1111's options for saving, infotext and sending, with A1111's keys and defaults.

Each one acts: the output stage reads the saving ones, the infotext stage the `add_*` ones, the
"Send to" buttons `send_seed` / `send_size`.  Kept apart from settings.py so that module stays short;
settings.py merges this table into OPTIONS.
"""
from __future__ import annotations

from webui.settings import OptionInfo

_SAVE = "Saving images"
_DIRS = "Saving to a directory"
_INFO = "Infotext"
_UI = "User interface"

OUTPUT_OPTIONS: dict[str, OptionInfo] = {
    "save_to_dirs": OptionInfo(True, "Save images to a subdirectory (one folder per day)", _DIRS, "checkbox"),
    "grid_save_to_dirs": OptionInfo(True, "Save grids to a subdirectory (one folder per day)", _DIRS, "checkbox"),
    "grid_format": OptionInfo("png", "File format for grids", _SAVE, "dropdown", choices=("png", "jpg", "webp")),
    "grid_only_if_multiple": OptionInfo(True, "Do not save grids consisting of one picture", _SAVE, "checkbox"),
    "n_rows": OptionInfo(-1, "Grid row count; use -1 for autodetect and 0 for it to be same as batch size", _SAVE,
                         "slider", minimum=-1, maximum=16, step=1),
    "jpeg_quality": OptionInfo(80, "Quality for saved jpeg and webp images", _SAVE, "slider",
                               minimum=1, maximum=100, step=1),
    "save_txt": OptionInfo(False, "Create a text file with infotext next to every generated image", _SAVE,
                           "checkbox"),
    "save_incomplete_images": OptionInfo(False, "Save incomplete images (interrupted or skipped in "
                                                "mid-generation; they are shown either way)", _SAVE, "checkbox"),
    "samples_log_stdout": OptionInfo(False, "Always print all generation info to standard output", _SAVE,
                                     "checkbox"),
    "add_model_name_to_info": OptionInfo(True, "Add model name to infotext", _INFO, "checkbox"),
    "add_model_hash_to_info": OptionInfo(True, "Add model hash to infotext", _INFO, "checkbox"),
    "add_vae_name_to_info": OptionInfo(True, "Add VAE name to infotext", _INFO, "checkbox"),
    "add_vae_hash_to_info": OptionInfo(True, "Add VAE hash to infotext", _INFO, "checkbox"),
    "add_version_to_infotext": OptionInfo(True, "Add program version to infotext", _INFO, "checkbox"),
    # no infotext key: a pasted "Tiling: True" sets the request's own `tiling` field
    "tiling": OptionInfo(False, "Tiling (produce a tileable picture; a request's own `tiling` wins)",
                         "Stable Diffusion", "checkbox"),
    "img2img_color_correction": OptionInfo(False, "Apply color correction to img2img results to match original "
                                                  "colors", "img2img", "checkbox"),
    # ---- file names, folders and formats (webui.filename_patterns; A1111's keys, defaults and labels) ----
    "samples_filename_pattern": OptionInfo("", "Images filename pattern ([seed], [prompt_words], [date], "
                                               "[datetime<%Y%m%d_%H%M%S>], ...; empty: [seed], or "
                                               "[seed]-[prompt_spaces] without subdirectories)", _SAVE),
    "save_images_add_number": OptionInfo(True, "Add number to filename when saving", _SAVE, "checkbox"),
    "save_images_replace_action": OptionInfo("Replace", "Saving the image to an existing file", _SAVE, "radio",
                                             choices=("Replace", "Add number suffix")),
    "grid_extended_filename": OptionInfo(False, "Add extended info (seed, prompt) to filename when saving grid",
                                         _SAVE, "checkbox"),
    "grid_zip_filename_pattern": OptionInfo("", "Archive filename pattern (🗜️; empty: "
                                                "[datetime]_[[model_name]]_[seed]-[seed_last])", _SAVE),
    "webp_lossless": OptionInfo(False, "Use lossless compression for webp images", _SAVE, "checkbox"),
    "use_original_name_batch": OptionInfo(True, "Use original name for output filename during batch process in "
                                                "extras tab (and img2img batch with an output directory)", _SAVE,
                                          "checkbox"),
    "use_upscaler_name_as_suffix": OptionInfo(False, "Use upscaler name as filename suffix in the extras tab",
                                              _SAVE, "checkbox"),
    "directories_filename_pattern": OptionInfo("[date]", "Directory name pattern (a / makes nested folders; "
                                                         "empty: [prompt_words])", _DIRS),
    "directories_max_prompt_words": OptionInfo(8, "Max prompt words for [prompt_words] pattern", _DIRS, "slider",
                                               minimum=1, maximum=20, step=1),
    "outdir_samples": OptionInfo("", "Output directory for images of every tab; if empty, each tab's own "
                                     "directory (txt2img, img2img, extras) is used", "Paths for saving"),
    "outdir_grids": OptionInfo("", "Output directory for grids of every tab; if empty, each tab's own grid "
                                   "directory (txt2img, img2img) is used", "Paths for saving"),
    "send_seed": OptionInfo(True, "Send seed when sending prompt or image to other interface", _UI, "checkbox"),
    "send_size": OptionInfo(True, "Send size when sending prompt or image to another interface", _UI, "checkbox"),
}
