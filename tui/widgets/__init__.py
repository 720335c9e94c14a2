"""The explorer's widgets, one module each."""

from .images import Tile, image_class
from .prompt_table import PromptTable, SearchBox
from .sparks import Sparks
from .step_strip import StepStrip
from .step_view import StepView

__all__ = ["PromptTable", "SearchBox", "Sparks", "StepStrip", "StepView", "Tile", "image_class"]
