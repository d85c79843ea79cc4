from __future__ import annotations

from pathlib import Path

import pytest

from pypod.errors import ProjectError, UsageError
from pypod.settings import read_pyproject, resolve


def test_flags_beat_environment_beat_pyproject_beat_defaults():
    pyproject = {"namespace": "from-toml", "cpu": "1", "memory": "1Gi", "gpu": 1}
    environ = {"KUBERNETES_NAMESPACE": "from-env", "PYPOD_CPU": "2"}
    settings = resolve({"namespace": "from-flag"}, environ, pyproject)
    assert settings.namespace == "from-flag"
    assert settings.cpu == "2"
    assert settings.memory == "1Gi"
    assert settings.gpu == 1
    assert settings.pending_timeout == 600.0


def test_julia_pod_environment_names_are_honoured():
    environ = {"KUBERNETES_NAMESPACE": "ns", "KUBERNETES_SERVICEACCOUNT": "sa", "IMAGE_REPO": "reg/x"}
    settings = resolve({}, environ, {})
    assert (settings.namespace, settings.service_account, settings.image_repo) == ("ns", "sa", "reg/x")


def test_pypod_prefixed_env_wins_over_legacy_name():
    settings = resolve({}, {"PYPOD_NAMESPACE": "new", "KUBERNETES_NAMESPACE": "old"}, {})
    assert settings.namespace == "new"


def test_invalid_quantity_is_a_usage_error_with_an_example():
    with pytest.raises(UsageError) as err:
        resolve({"memory": "4GG"}, {}, {})
    assert "4GG" in str(err.value)
    assert "4Gi" in err.value.hint
    assert err.value.exit_code == 64


def test_platform_defaults_to_amd64_and_must_be_os_slash_arch():
    assert resolve({}, {}, {}).platform == "linux/amd64"
    assert resolve({}, {"PYPOD_PLATFORM": "linux/arm64/v8"}, {}).platform == "linux/arm64/v8"
    with pytest.raises(UsageError, match="os/arch") as err:
        resolve({"platform": "arm64"}, {}, {})
    assert "--platform linux/arm64" in err.value.hint


def test_unknown_pyproject_setting_is_named():
    with pytest.raises(UsageError, match="colour"):
        resolve({}, {}, {"colour": "blue"})


def test_env_and_labels_from_toml_tables(tmp_path: Path):
    (tmp_path / "pyproject.toml").write_text('[tool.pypod]\nenv = {A = "1"}\nlabels = ["team=ml"]\nkeep-alive = 60\n')
    settings = resolve({}, {}, read_pyproject(tmp_path))
    assert settings.env == (("A", "1"),)
    assert settings.labels == (("team", "ml"),)
    assert settings.keep_alive == 60.0


def test_broken_pyproject_is_a_project_error(tmp_path: Path):
    (tmp_path / "pyproject.toml").write_text("[tool.pypod\n")
    with pytest.raises(ProjectError):
        read_pyproject(tmp_path)


def test_threads_setting_is_auto_off_or_a_count():
    assert resolve({}, {}, {}).threads == "auto"
    assert resolve({"threads": "OFF"}, {}, {}).threads == "off"
    assert resolve({}, {"PYPOD_THREADS": "4"}, {}).threads == "4"
    assert resolve({}, {}, {"threads": 2}).threads == "2"
    for bad in ("0", "many", "-1"):
        with pytest.raises(UsageError, match="--threads must be auto, off or a count"):
            resolve({"threads": bad}, {}, {})
