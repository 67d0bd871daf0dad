"""Action inputs filled from the manifest's examples."""

from __future__ import annotations

from typing import Any

from pagerduty_connector.component.manifest import Action

Ex = dict[str, Any]


def examples(action: Action) -> Ex:
    """The action's inputs filled from their manifest examples."""
    return {
        i.key: i.example
        for i in action.inputs
        if i.example is not None and i.type.value != "connection"
    }
