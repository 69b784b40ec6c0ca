"""Where failure alerts go besides the ``pipeline_alerts`` table."""

import json
import os
import urllib.request

from dagster import ConfigurableResource

from resources.environment import ALERT_WEBHOOK


class AlertWebhook(ConfigurableResource):
    """Where failure alerts are POSTed as JSON: ``url`` (or ``COUGH_PIPELINE_ALERT_WEBHOOK``); empty sends none."""

    url: str = ""
    timeout_s: float = 10.0

    def resolved_url(self) -> str:
        return self.url or os.environ.get(ALERT_WEBHOOK, "")

    def send(self, payload: dict) -> str:
        """POST ``payload``; returns what happened (``"not configured"``, ``"sent (<status>)"`` or the error), never
        raises: an alert that cannot be delivered must not hide the failure it reports."""
        url = self.resolved_url()
        if not url:
            return "not configured"
        request = urllib.request.Request(
            url, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"}, method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                return f"sent ({response.status})"
        except (OSError, ValueError) as error:
            return f"not sent: {type(error).__name__}: {error}"
