"""A1111's `modules.ui_components` as gradio 6 components.

`ToolButton` (a small button, class "tool"), `FormRow`, `FormColumn`, `FormGroup`, `FormHTML`,
`ResizeHandleRow`, `DropdownMulti`, `DropdownEditable`, and `InputAccordion`.

`InputAccordion(value, label=..., elem_id=...)` is, as in A1111, a checkbox whose value is the
component's value (so it goes into a script's `ui()` list and its `True`/`False` arrives in the
hook's arguments), and a context manager that opens an accordion: `with InputAccordion(False,
label="My feature") as enabled: ...` puts the controls inside. A1111 draws the checkbox in the
accordion's header with its own JavaScript; here the accordion holds a visible checkbox (same
label) as its first control, and starts open when the value is True. `.accordion` is the
`gr.Accordion`, `.extra()` a column inside it.

Each class names its gradio block (`get_block_name`), so the page renders them as the gradio
component they extend.
"""
from __future__ import annotations

from typing import Any

import gradio as gr


class FormComponent:
    """A1111's marker base (gradio 6 places form components itself)."""
    webui_tooltip: str | None = None


class ToolButton(gr.Button, FormComponent):
    """A small button showing one symbol (A1111's 🔄, 📋, ...)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        classes = kwargs.pop("elem_classes", None) or []
        if isinstance(classes, str):
            classes = [classes]
        kwargs.setdefault("min_width", 0)
        super().__init__(*args, elem_classes=["tool", *classes], **kwargs)

    def get_block_name(self) -> str:
        return "button"


class ResizeHandleRow(gr.Row):
    """A row whose columns the user can resize (A1111's class name; gradio lays it out as a row)."""

    def __init__(self, **kwargs: Any) -> None:
        classes = kwargs.pop("elem_classes", None) or []
        if isinstance(classes, str):
            classes = [classes]
        super().__init__(elem_classes=["resize-handle-row", *classes], **kwargs)

    def get_block_name(self) -> str:
        return "row"


class FormRow(gr.Row, FormComponent):
    def get_block_name(self) -> str:
        return "row"


class FormColumn(gr.Column, FormComponent):
    def get_block_name(self) -> str:
        return "column"


class FormGroup(gr.Group, FormComponent):
    def get_block_name(self) -> str:
        return "group"


class FormHTML(gr.HTML, FormComponent):
    def get_block_name(self) -> str:
        return "html"


class DropdownMulti(gr.Dropdown, FormComponent):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(multiselect=True, **kwargs)

    def get_block_name(self) -> str:
        return "dropdown"


class DropdownEditable(gr.Dropdown, FormComponent):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(allow_custom_value=True, **kwargs)

    def get_block_name(self) -> str:
        return "dropdown"


class InputAccordion(gr.Checkbox):
    """An accordion whose checkbox is the value (see the module's note)."""

    global_index = 0

    def __init__(self, value: bool = False, **kwargs: Any) -> None:
        self.accordion_id = kwargs.pop("elem_id", None)
        if self.accordion_id is None:
            self.accordion_id = f"input-accordion-{InputAccordion.global_index}"
            InputAccordion.global_index += 1
        label = kwargs.pop("label", None) or "Accordion"
        visible = kwargs.get("visible", True)
        kwargs.pop("render", None)
        super().__init__(value, label=label, elem_id=f"{self.accordion_id}-checkbox", render=False, **kwargs)
        self.accordion = gr.Accordion(label=label, open=bool(value), elem_id=self.accordion_id,
                                      elem_classes=["input-accordion"], visible=visible)
        with self.accordion:
            self.render()

    def extra(self) -> gr.Column:
        """A column inside the accordion for controls that belong with the checkbox."""
        return gr.Column(elem_id=f"{self.accordion_id}-extra", elem_classes=["input-accordion-extra"], min_width=0)

    def __enter__(self) -> "InputAccordion":
        self.accordion.__enter__()
        return self

    def __exit__(self, exc_type: Any, exc_val: Any, exc_tb: Any) -> None:
        self.accordion.__exit__(exc_type, exc_val, exc_tb)

    def get_block_name(self) -> str:
        return "checkbox"

__all__ = [
    "DropdownEditable", "DropdownMulti", "FormColumn", "FormComponent", "FormGroup", "FormHTML", "FormRow",
    "InputAccordion", "ResizeHandleRow", "ToolButton"
]
