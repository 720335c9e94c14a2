"""The explorer's screens: the main screen, and the help and export dialogs."""

from .export import ExportScreen
from .help import HelpScreen
from .main import MainScreen

__all__ = ["ExportScreen", "HelpScreen", "MainScreen"]
