"""The explorer's screens: the main screen, the zoom, side-by-side and layer x step screens, and the help, export and settings dialogs."""

from .compare import CompareScreen
from .export import ExportScreen
from .help import HelpScreen
from .layers import LayerStepScreen
from .main import MainScreen
from .settings import SettingsScreen
from .zoom import ZoomScreen

__all__ = ["CompareScreen", "ExportScreen", "HelpScreen", "LayerStepScreen", "MainScreen", "SettingsScreen", "ZoomScreen"]
