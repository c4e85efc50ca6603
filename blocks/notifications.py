"""Prefect block: the webhook modelferry notifies when a run waits for approval or fails."""

from __future__ import annotations

from prefect.blocks.core import Block
from pydantic import ConfigDict, Field, SecretStr

from modelferry.notify import WebhookNotifier


class WebhookNotification(Block):
    """An incoming-webhook URL (chat, incident tool, automation) for modelferry's notices.

    Save one and name it in `MODELFERRY_WEBHOOK_BLOCK`; the URL is kept secret:

        WebhookNotification(url="https://hooks.example.com/T0K3N").save("team-chat")
    """

    _block_type_name = "modelferry Webhook Notification"
    _block_type_slug = "modelferry-webhook-notification"
    _description = "Webhook notified when a modelferry run waits for approval or fails."
    model_config = ConfigDict(hide_input_in_errors=True)

    url: SecretStr = Field(description="The webhook URL; often holds a token, so kept secret.")
    timeout_seconds: float = Field(default=5.0, gt=0, description="Per attempt.")
    attempts: int = Field(default=3, ge=1, le=10, description="Tries before giving up.")

    def get_notifier(self) -> WebhookNotifier:
        """The library notifier this block configures."""
        return WebhookNotifier(
            self.url, timeout_seconds=self.timeout_seconds, attempts=self.attempts
        )
