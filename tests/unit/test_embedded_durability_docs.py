"""The embedded bus's durability is stated where it is offered (issue 13, item 16).

With the embedded bus a SIGKILL loses every event learnt since the last
save; the README and the updater's docstring must say so, with the default
save interval the code actually has.
"""

from __future__ import annotations

import re
from pathlib import Path

from autoretrain.webhook.updater import settings, updater

ROOT = Path(__file__).resolve().parents[2]


def test_the_readme_states_the_loss_and_the_save_interval_trade_off() -> None:
    text = ROOT.joinpath("README.md").read_text()
    assert "The embedded bus loses unsaved events on a crash" in text
    default = settings.UpdaterSettings.save_interval_seconds
    section = text[text.index("The embedded bus loses unsaved events"):]
    section = section[: section.index("\n## ")]
    assert "SIGKILL" in section
    assert re.search(rf"\| {default:g} \(default\) \|", section), section
    assert f"default {default:g} s" in section


def test_the_updater_docstring_states_the_loss() -> None:
    doc = updater.__doc__ or ""
    default = settings.UpdaterSettings.save_interval_seconds
    assert "SIGKILL" in doc and f"{default:g} s by default" in doc
