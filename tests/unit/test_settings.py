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


def test_profile_sits_between_environment_and_pyproject():
    from pypod.profiles import Profile

    pyproject = {"memory": "1Gi", "cpu": "1", "queue": "toml-queue", "profiles": {"eidf": {"cpu": "4", "shm": "8Gi"}}}
    settings = resolve({"profile": "eidf"}, {"PYPOD_CPU": "2"}, pyproject)
    assert (settings.cpu, settings.shm, settings.memory, settings.queue) == ("2", "8Gi", "1Gi", "toml-queue")
    assert settings.origins["cpu"] == "$PYPOD_CPU"
    assert settings.origins["shm"] == "profile eidf"
    assert settings.origins["memory"] == "[tool.pypod]"
    assert "gpu" not in settings.origins
    assert settings.profile == "eidf"
    assert settings.profile_source == "pyproject.toml [tool.pypod.profiles], chosen by --profile"
    # A flag beats the profile; the user's config provides profiles too.
    user = {"gpu": Profile("gpu", {"gpu": 1, "gpu_product": "NVIDIA-A100-SXM4-80GB"}, "~/.config/pypod/config.toml")}
    chosen = resolve({"gpu": 2}, {"PYPOD_PROFILE": "gpu"}, {}, user)
    assert (chosen.gpu, chosen.gpu_product, chosen.origins["gpu"]) == (2, "NVIDIA-A100-SXM4-80GB", "--gpu")


def test_profile_selection_order_and_project_profiles_replace_the_users():
    from pypod.profiles import Profile

    user = {"p": Profile("p", {"cpu": "1"}, "~/.config/pypod/config.toml")}
    pyproject = {"profile": "p", "profiles": {"p": {"cpu": "3"}, "q": {"cpu": "5"}}}
    assert resolve({}, {}, pyproject, user).cpu == "3"
    assert resolve({}, {"PYPOD_PROFILE": "q"}, pyproject, user).cpu == "5"
    assert resolve({"profile": "p"}, {"PYPOD_PROFILE": "q"}, pyproject, user).cpu == "3"


def test_unknown_profile_lists_the_profiles_and_where_they_were_read():
    from pypod.profiles import Profile

    user = {"eidf": Profile("eidf", {}, "~/.config/pypod/config.toml")}
    with pytest.raises(UsageError) as err:
        resolve({"profile": "eidff"}, {}, {"profiles": {"gpu": {}}}, user)
    assert err.value.one_line() == (
        "unknown profile 'eidff' (from --profile). profiles found: eidf (from ~/.config/pypod/config.toml); "
        "gpu (from pyproject.toml [tool.pypod.profiles])"
    )
    assert err.value.exit_code == 64
    with pytest.raises(UsageError, match="no profiles are defined"):
        resolve({}, {"PYPOD_PROFILE": "x"}, {})
    with pytest.raises(UsageError, match=r"unknown setting\(s\) in profile bad"):
        resolve({"profile": "bad"}, {}, {"profiles": {"bad": {"colour": "blue"}}})


def test_user_config_follows_xdg(tmp_path: Path):
    from pypod.profiles import read_user_profiles, user_config_path

    home = tmp_path / "home"
    assert user_config_path({"HOME": str(home)}) == home / ".config/pypod/config.toml"
    xdg = tmp_path / "xdg"
    assert user_config_path({"HOME": str(home), "XDG_CONFIG_HOME": str(xdg)}) == xdg / "pypod/config.toml"
    assert user_config_path({"HOME": str(home), "XDG_CONFIG_HOME": "relative"}) == home / ".config/pypod/config.toml"
    (xdg / "pypod").mkdir(parents=True)
    (xdg / "pypod/config.toml").write_text('[profiles.eidf]\nqueue = "{namespace}-user-queue"\ngenerate-name = true\n')
    profiles = read_user_profiles({"HOME": str(home), "XDG_CONFIG_HOME": str(xdg)})
    assert profiles["eidf"].values == {"queue": "{namespace}-user-queue", "generate_name": True}
    assert profiles["eidf"].source == str(xdg / "pypod/config.toml")
    (xdg / "pypod/config.toml").write_text("[defaults]\ncpu = 1\n")
    with pytest.raises(UsageError, match="unknown table"):
        read_user_profiles({"HOME": str(home), "XDG_CONFIG_HOME": str(xdg)})


def test_describe_origins_names_each_non_default_setting():
    from pypod.settings import describe_origins

    settings = resolve({"cpu": "2", "labels": (("a", "b"),)}, {}, {"profiles": {"e": {"shm": "1Gi"}}, "profile": "e"})
    assert describe_origins(settings) == [
        "profile = e (from pyproject.toml [tool.pypod.profiles], chosen by [tool.pypod] profile)",
        "cpu = 2 (--cpu)",
        "shm = 1Gi (profile e)",
        "labels = a=b (--label)",
    ]
