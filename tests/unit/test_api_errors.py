from __future__ import annotations

from types import SimpleNamespace

from pypod.errors import Forbidden, Rejected
from pypod.kube.client import translate_api_error


def api_error(code: int, message: str) -> Exception:
    error = Exception(message)
    error.status = SimpleNamespace(code=code, message=message)  # type: ignore[attr-defined]
    return error


def test_an_admission_webhook_refusal_is_the_webhooks_own_words_not_rbac():
    message = (
        'admission webhook "vjob.kb.io" denied the request: metadata.labels[kueue.x-k8s.io/max-exec-time-seconds]: '
        "Invalid value: 0: should be greater than 0"
    )
    error = translate_api_error(api_error(403, message), "create", "jobs", "ns")
    assert isinstance(error, Rejected)
    assert error.exit_code == 78
    assert error.message == f"the cluster refused to create jobs: {message}"
    assert isinstance(translate_api_error(api_error(403, "jobs is forbidden"), "create", "jobs", "ns"), Forbidden)
