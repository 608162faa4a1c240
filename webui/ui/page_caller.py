"""Who triggered a Gradio event: the signed-in account, or the browser session without accounts
(the owner of the jobs the event queues, and whose jobs its Interrupt and Skip may stop)."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from webui.serving.caller import Caller, caller_for_user

if TYPE_CHECKING:
    from webui.services.container import Services


def page_caller(svc: "Services", request: Any) -> Caller:
    """`request` is the event's `gr.Request` (None outside an event: the server itself)."""
    return caller_for_user(getattr(request, "username", None), svc.accounts, getattr(request, "session_hash", None))


def page_owner(svc: "Services", request: Any) -> str:
    return page_caller(svc, request).owner
