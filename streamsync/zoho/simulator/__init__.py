"""The bundled Zoho CRM v8 simulator (see docs/zoho.md): ``create_app(SimConfig(...))``."""

from streamsync.zoho.simulator.app import SIM_STATE, create_app, serve
from streamsync.zoho.simulator.schema import POISON_MARK, FieldDef, ModuleDef, default_modules
from streamsync.zoho.simulator.state import SimConfig, SimState

__all__ = [
    "POISON_MARK",
    "SIM_STATE",
    "FieldDef",
    "ModuleDef",
    "SimConfig",
    "SimState",
    "create_app",
    "default_modules",
    "serve",
]
