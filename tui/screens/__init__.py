"""The explorer's screens: the main screen, the zoom and layer x step screens, and the help, export and settings dialogs."""

from .export import ExportScreen
from .help import HelpScreen
from .layers import LayerStepScreen
from .main import MainScreen
from .settings import SettingsScreen
from .zoom import ZoomScreen

__all__ = ["ExportScreen", "HelpScreen", "LayerStepScreen", "MainScreen", "SettingsScreen", "ZoomScreen"]
