"""Extra-networks cards (A1111's Textual Inversion / Hypernetworks / Checkpoints / Lora tabs).

A card per file: its preview (`<stem>.png`, `<stem>.preview.png`, also .jpg/.jpeg/.webp) or a
placeholder with its name; search, sort and refresh per tab.  Clicking a card inserts its tag into
the prompt (again: removes it) or, for checkpoints, switches the model.  The user-metadata editor
writes `<stem>.json` beside the file with A1111's keys (description, activation text, preferred
weight, negative text, notes); activation/negative text go into the prompts with the tag.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import gradio as gr
from PIL import Image, ImageDraw

if TYPE_CHECKING:
    from webui.services.container import Services

KINDS = ("Textual Inversion", "Hypernetworks", "Checkpoints", "Lora")
PREVIEW_SUFFIXES = (".png", ".preview.png", ".jpg", ".jpeg", ".webp", ".preview.jpg", ".preview.webp")


@dataclass
class Card:
    kind: str
    name: str           # what the tag uses (file stem; checkpoint title)
    label: str          # shown under the card
    path: Path | None
    note: str = ""      # e.g. "skipped: …" for an embedding that does not fit

    @property
    def stem_path(self) -> Path | None:
        if self.path is None:
            return None
        return self.path if self.path.is_dir() else self.path.with_suffix("")


def preview_for(card: Card) -> str | Image.Image:
    base = card.stem_path
    if base is not None:
        for suf in PREVIEW_SUFFIXES:
            p = base.parent / (base.name + suf)
            if p.is_file():
                return str(p)
    return placeholder(card.label)


@lru_cache(maxsize=512)
def placeholder(text: str) -> Image.Image:
    img = Image.new("RGB", (192, 256), (58, 63, 75))
    d = ImageDraw.Draw(img)
    words, lines, line = text.replace("_", " ").split(), [], ""
    for w in words:
        if len(line) + len(w) > 18 and line:
            lines.append(line)
            line = w
        else:
            line = f"{line} {w}".strip()
    lines.append(line)
    for i, ln in enumerate(lines[:8]):
        d.text((12, 96 + 16 * i), ln, fill=(230, 230, 235))
    return img


def user_metadata_path(card: Card) -> Path | None:
    base = card.stem_path
    return None if base is None else base.parent / (base.name + ".json")


def read_user_metadata(card: Card) -> dict[str, Any]:
    p = user_metadata_path(card)
    if p is None or not p.is_file():
        return {}
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def write_user_metadata(card: Card, values: dict[str, Any]) -> Path:
    p = user_metadata_path(card)
    if p is None:
        raise ValueError(f"{card.label} has no file to keep metadata beside")
    data = read_user_metadata(card)
    data.update(values)
    tmp = p.with_name(p.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=4, ensure_ascii=False), encoding="utf-8")
    tmp.replace(p)
    return p


def list_cards(svc: "Services", kind: str) -> list[Card]:
    cur = svc.models.current
    family = cur.sd.family if cur is not None else None
    if kind == "Lora":
        svc.models.loras.refresh()
        return [Card(kind, e["name"], e["name"], Path(e["path"]), e["note"])
                for e in svc.models.loras.listing(family)]
    if kind == "Hypernetworks":
        svc.models.hypernetworks.refresh()
        return [Card(kind, e["name"], e["name"], Path(e["path"]), e["note"])
                for e in svc.models.hypernetworks.listing(family)]
    if kind == "Checkpoints":
        svc.registry.refresh()
        return [Card(kind, c.title, c.model_name, c.path, f"unusable: {c.error}" if c.error else "")
                for c in svc.registry.list()]
    db = getattr(cur.encoder, "embeddings", None) if cur is not None else None
    if db is None:
        return []
    db.refresh_if_changed()
    cards = [Card(kind, n, n, e.path) for n, e in sorted(db.loaded.items())]
    folder = db.folder
    for n, why in sorted(db.skipped.items()):
        path = next((p for p in folder.rglob(n + ".*")), None) if folder and folder.is_dir() else None
        cards.append(Card(kind, n, n, path, f"skipped: {why}"))
    return cards


def filter_sort(cards: list[Card], search: str, order: str) -> list[Card]:
    q = (search or "").strip().lower()
    out = [c for c in cards if not q or q in c.label.lower() or (c.path and q in str(c.path).lower())]
    if order == "Date modified":
        out.sort(key=lambda c: -(c.path.stat().st_mtime if c.path and c.path.exists() else 0))
    else:
        out.sort(key=lambda c: c.label.lower())
    return out


def tag_for(card: Card, meta: dict[str, Any], default_multiplier: float = 1.0) -> str:
    """The text a card adds: its preferred weight, else A1111's extra_networks_default_multiplier."""
    weight = meta.get("preferred weight") or default_multiplier
    if card.kind == "Lora":
        return f"<lora:{card.name}:{float(weight):g}>"
    if card.kind == "Hypernetworks":
        return f"<hypernet:{card.name}:{float(weight):g}>"
    return card.name


def toggle_in_prompt(prompt: str, tag: str, extra: str = "", separator: str = " ") -> str:
    """Add ``tag`` (and activation text after a space) to the prompt, after A1111's
    extra_networks_add_text_separator, or take them out if the tag is already there."""
    prompt = prompt or ""
    if card_pattern(tag).search(prompt):
        out = card_pattern(tag).sub("", prompt)
        if extra:
            out = out.replace(extra, "")
        out = re.sub(r"(,\s*){2,}", ", ", out)
        return re.sub(r"[ \t]{2,}", " ", out).strip().strip(",").strip()
    text = " ".join(t for t in (tag, extra.strip()) if t)
    return prompt + separator + text if prompt.strip() else text


def card_pattern(tag: str) -> re.Pattern:
    m = re.match(r"<(\w+):([^:>]+)", tag)
    if m:  # any multiplier of the same network counts as "already there"
        return re.compile(rf"<{re.escape(m[1])}:{re.escape(m[2])}(:[^>]*)?>")
    return re.compile(rf"(?<![\w]){re.escape(tag)}(?![\w])")


# what each tab lists and which file types (A1111's folders; the flags can point elsewhere)
EMPTY_HINTS = {"Textual Inversion": ("embedding", ".pt, .safetensors or .bin"),
               "Hypernetworks": ("hypernetwork", ".pt"),
               "Checkpoints": ("checkpoint", ".safetensors or .ckpt"),
               "Lora": ("LoRA", ".safetensors")}


def kind_folders(svc: "Services", kind: str) -> list[Path]:
    """The folders a tab's cards come from (LoRA also reads the LyCORIS folder, as A1111 does)."""
    paths = svc.paths
    if kind == "Lora":
        return [paths.lora_dir, paths.lyco_dir]
    if kind == "Hypernetworks":
        return [paths.hypernetwork_dir]
    if kind == "Checkpoints":
        return [paths.ckpt_dir]
    return [paths.embeddings_dir]


def empty_note(svc: "Services", kind: str) -> str:
    """What to do when a tab has no cards: a new user otherwise sees only a blank box."""
    what, exts = EMPTY_HINTS[kind]
    folders = " or ".join(f"`{f}`" for f in kind_folders(svc, kind))
    return f"No {what} files: put {exts} files in {folders} and press 🔄."


def create_extra_networks(svc: "Services", prefix: str, prompt: gr.Textbox, neg_prompt: gr.Textbox) -> dict[str, Any]:
    comps: dict[str, Any] = {}
    with gr.Accordion("Extra networks", open=False, elem_id=f"{prefix}_extra_networks") as acc:
        with gr.Tabs():
            for kind in KINDS:
                key = kind.lower().replace(" ", "_")
                with gr.Tab(kind, elem_id=f"{prefix}_{key}_tab"):
                    with gr.Row():
                        search = gr.Textbox(placeholder="Search", show_label=False, scale=4,
                                            elem_id=f"{prefix}_{key}_search")
                        order = gr.Dropdown(["Name", "Date modified"], value="Name", show_label=False, scale=1,
                                            min_width=120, elem_id=f"{prefix}_{key}_sort")
                        refresh = gr.Button("🔄", size="sm", scale=0, min_width=44, elem_id=f"{prefix}_{key}_refresh")
                    gallery = gr.Gallery(show_label=False, columns=6, height=300, allow_preview=False, preview=False,
                                         elem_id=f"{prefix}_{key}_cards", object_fit="cover",
                                         elem_classes=["extra-network-cards"])
                    empty = gr.Markdown("", visible=False, elem_id=f"{prefix}_{key}_empty",
                                        elem_classes=["extra-network-empty"])
                    shown = gr.State([])
                    with gr.Accordion("Edit metadata of the selected card", open=False,
                                      elem_id=f"{prefix}_{key}_meta"):
                        selected_name = gr.Markdown("", elem_id=f"{prefix}_{key}_meta_name")
                        desc = gr.Textbox(label="Description", lines=2, elem_id=f"{prefix}_{key}_meta_description")
                        act = gr.Textbox(label="Activation text", elem_id=f"{prefix}_{key}_meta_activation")
                        pw = gr.Number(label="Preferred weight", value=0, elem_id=f"{prefix}_{key}_meta_weight")
                        negt = gr.Textbox(label="Negative text", elem_id=f"{prefix}_{key}_meta_negative")
                        notes = gr.Textbox(label="Notes", lines=2, elem_id=f"{prefix}_{key}_meta_notes")
                        save = gr.Button("Save", size="sm", elem_id=f"{prefix}_{key}_meta_save")
                    current = gr.State(None)

                    def load_cards(q: str, o: str, kind: str = kind) -> tuple[Any, list, Any]:
                        found = list_cards(svc, kind)
                        cards = filter_sort(found, q, o)
                        items = [(preview_for(c), c.label + (f" ({c.note})" if c.note else "")) for c in cards]
                        note = gr.update(value=empty_note(svc, kind), visible=True) if not found else \
                            gr.update(visible=False)
                        return gr.update(value=items), [(c.kind, c.name, c.label, str(c.path) if c.path else None,
                                                         c.note) for c in cards], note

                    for trig in (refresh.click, search.submit, order.change):
                        trig(load_cards, [search, order], [gallery, shown, empty], show_progress="hidden",
                             api_visibility="private")

                    def on_card(cards: list, p: str, n: str, evt: gr.SelectData, kind: str = kind) -> tuple[Any, ...]:
                        idx = int(evt.index) if isinstance(evt.index, int) else 0
                        if not cards or idx >= len(cards):
                            return (gr.update(),) * 9
                        c = Card(*cards[idx][:3], Path(cards[idx][3]) if cards[idx][3] else None, cards[idx][4])
                        meta = read_user_metadata(c)
                        fields = (f"**{c.label}**" + (f" — {c.note}" if c.note else ""), meta.get("description", ""),
                                  meta.get("activation text", ""), meta.get("preferred weight", 0),
                                  meta.get("negative text", ""), meta.get("notes", ""), cards[idx])
                        if kind == "Checkpoints":
                            try:
                                svc.select_checkpoint(c.name)
                                gr.Info(f"Loaded {c.name}")
                            except Exception as e:
                                gr.Warning(f"Could not load {c.name}: {e}", title="Checkpoint not loaded")
                            return (gr.update(), gr.update()) + fields
                        if c.note:
                            gr.Warning(f"{c.label} is not usable with the loaded model ({c.note})")
                        sep = str(svc.settings.get("extra_networks_add_text_separator") or "")
                        tag = tag_for(c, meta, float(svc.settings.get("extra_networks_default_multiplier")))
                        added = not card_pattern(tag).search(p or "")
                        new_p = toggle_in_prompt(p, tag, meta.get("activation text", ""), sep)
                        neg_text = (meta.get("negative text") or "").strip()
                        new_n = n
                        if neg_text and added != (neg_text in (n or "")):  # keep the pair in step
                            new_n = toggle_in_prompt(n, neg_text, separator=sep)
                        return (new_p, new_n) + fields

                    gallery.select(on_card, [shown, prompt, neg_prompt],
                                   [prompt, neg_prompt, selected_name, desc, act, pw, negt, notes, current],
                                   show_progress="hidden", api_visibility="private")

                    def save_meta(cur: Any, d: str, a: str, w: float, ng: str, nt: str) -> Any:
                        if not cur or not cur[3]:
                            gr.Warning("Select a card first")
                            return gr.update()
                        c = Card(cur[0], cur[1], cur[2], Path(cur[3]), cur[4])
                        try:
                            p = write_user_metadata(c, {"description": d, "activation text": a,
                                                        "preferred weight": float(w or 0), "negative text": ng,
                                                        "notes": nt})
                        except (OSError, ValueError) as e:
                            gr.Warning(f"Metadata not saved: {e}")
                            return gr.update()
                        gr.Info(f"Saved {p.name}")
                        return gr.update()

                    save.click(save_meta, [current, desc, act, pw, negt, notes], None, show_progress="hidden",
                               api_visibility="private")
                    comps[kind] = {"gallery": gallery, "search": search, "refresh": refresh, "load": load_cards,
                                   "order": order, "shown": shown, "empty": empty}

    def load_all(*args: Any) -> list[Any]:
        out: list[Any] = []
        for i, kind in enumerate(KINDS):
            out.extend(comps[kind]["load"](args[2 * i], args[2 * i + 1], kind))
        return out

    acc.expand(load_all, [x for k in KINDS for x in (comps[k]["search"], comps[k]["order"])],
               [x for k in KINDS for x in (comps[k]["gallery"], comps[k]["shown"], comps[k]["empty"])],
               show_progress="hidden",
               api_visibility="private")
    return comps
