"""Images of a project: detect its files, build the dependency image, append the source layer, push."""

# What clusters mostly run; a laptop's own platform (arm64 Macs) would make images those
# nodes cannot execute. Here, not in registry.py, so that settings need not import the registry.
DEFAULT_PLATFORM = "linux/amd64"
