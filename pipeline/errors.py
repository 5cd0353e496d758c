"""Errors a user can act on.

Every failure caused by input (a missing file, a bad config key, a video ffmpeg cannot read) is raised
as a `DeidError` whose message is one line naming the file and the fix; the CLI prints it without a
traceback and exits non-zero. Anything else is a bug and keeps its traceback.
"""
from __future__ import annotations


class DeidError(Exception):
    """A one-line, user-actionable failure."""


class ConfigError(DeidError):
    """pipeline.yaml or a command-line value is invalid."""


class MediaError(DeidError):
    """An input video or image cannot be used."""


class LeakError(DeidError):
    """The leak check found a face in a written output; it was kept aside, not published."""

    exit_status = 1
