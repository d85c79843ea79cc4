"""Where the agent keeps its files in a pod. Standard library only; Python >= 3.8."""

import os

# The candidates of tempfile.gettempdir(), in its order; pypod's stdin loader
# (pypod/agent/__init__.py) makes the same choice in its own few lines.
TEMP_VARS = ("TMPDIR", "TEMP", "TMP")
TEMP_DIRS = ("/tmp", "/var/tmp", "/usr/tmp")


def temp_dir():
    """tempfile.gettempdir()'s choice without importing tempfile (with shutil and random,
    ~13 ms of a new agent's start): the first of $TMPDIR, $TEMP, $TMP, /tmp, /var/tmp and
    /usr/tmp that this process can write in, else the working directory."""
    for candidate in [os.environ.get(name) for name in TEMP_VARS] + list(TEMP_DIRS):
        if candidate and os.path.isdir(candidate) and os.access(candidate, os.W_OK | os.X_OK):
            return os.path.abspath(candidate)
    return os.getcwd()


def agent_dir():
    """The agent's own directory: the unpacked archives, the sync's stat caches."""
    return os.path.join(temp_dir(), "pypod")
