"""Type stubs for the native extension ``r1omni_fast._native`` (built from rust/python.rs)."""

__version__: str

def build_info() -> dict[str, str]:
    """Crate version, build profile, target and the versions of the native libraries linked."""
