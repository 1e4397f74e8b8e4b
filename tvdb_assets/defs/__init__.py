# Before any definition is declared: quiet the beta APIs we opt into (see the module).
import tvdb_assets.defs.beta  # noqa: F401
