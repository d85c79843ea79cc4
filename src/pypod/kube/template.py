"""julia_pod-style driver templates: YAML with `$ALLCAPS` placeholders.

Values never pass through the YAML parser: each placeholder becomes an inert
token, the YAML is parsed, and the tokens are replaced inside the parsed
strings. Code with quotes, colons or newlines therefore cannot break the YAML.
`$COMMAND` standing alone as a list item or a value becomes the whole command list.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from ..errors import TemplateError

PLACEHOLDERS = (
    "IMAGE_TAG",
    "RUNID",
    "KUBERNETES_SERVICEACCOUNT",
    "KUBERNETES_NAMESPACE",
    "GIT_REPO",
    "GIT_BRANCH",
    "GIT_COMMIT",
    "COMMAND",
)
_PLACEHOLDER = re.compile(r"\$(?:\{(" + "|".join(PLACEHOLDERS) + r")\}|(" + "|".join(PLACEHOLDERS) + r")\b)")
_TOKEN = "PYPODTEMPLATEVALUE{}X"
_TOKEN_RE = re.compile(r"PYPODTEMPLATEVALUE([A-Z_]+?)X")

DEFAULT_TEMPLATE = """\
# pypod driver template. `pypod --template driver.yaml.template` uses it.
# $ALLCAPS placeholders are filled in by pypod at each run; keep them.
# Flags (--cpu, --memory, --gpu, --env, --label) are applied after rendering.
apiVersion: batch/v1
kind: Job
metadata:
  name: $RUNID
  labels:
    pypod.dev/repo: $GIT_REPO
spec:
  backoffLimit: 0
  template:
    spec:
      restartPolicy: Never
      serviceAccountName: $KUBERNETES_SERVICEACCOUNT
      terminationGracePeriodSeconds: 10
      containers:
        - name: driver
          image: $IMAGE_TAG
          command: [$COMMAND]
          env:
            - name: GIT_REPO
              value: $GIT_REPO
            - name: GIT_BRANCH
              value: $GIT_BRANCH
            - name: GIT_COMMIT
              value: $GIT_COMMIT
"""


def _tokenize(text: str) -> str:
    return _PLACEHOLDER.sub(lambda m: _TOKEN.format(m.group(1) or m.group(2)), text)


def _fill(node: Any, values: Mapping[str, str], command: Sequence[str]) -> Any:
    if isinstance(node, dict):
        return {_fill(k, values, command): _fill(v, values, command) for k, v in node.items()}
    if isinstance(node, list):
        out: list[Any] = []
        for item in node:
            if item == _TOKEN.format("COMMAND"):
                out.extend(command)
            else:
                out.append(_fill(item, values, command))
        return out
    if isinstance(node, str):
        if node == _TOKEN.format("COMMAND"):
            return list(command)
        return _TOKEN_RE.sub(lambda m: values.get(m.group(1), ""), node)
    return node


def render_template(text: str, values: Mapping[str, str], command: Sequence[str], source: str = "template") -> dict:
    """Parse a driver template and fill its placeholders; it must describe one Job."""
    import yaml  # here: a run without a template does not pay for PyYAML's import

    try:
        parsed = yaml.safe_load(_tokenize(text))
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        at = f" at line {where.line + 1}" if where else ""
        raise TemplateError(
            f"{source} is not valid YAML{at}",
            hint="fix the YAML, or write a fresh one with `pypod template`",
        ) from exc
    if (
        not isinstance(parsed, dict)
        or parsed.get("kind") != "Job"
        or not str(parsed.get("apiVersion", "")).startswith("batch/")
    ):
        kind = parsed.get("kind") if isinstance(parsed, dict) else type(parsed).__name__
        raise TemplateError(
            f"{source} describes a {kind or 'document without a kind'}, not a batch/v1 Job",
            hint="the driver template must be one Job; see `pypod template`",
        )
    containers = parsed.get("spec", {}).get("template", {}).get("spec", {}).get("containers")
    if not containers:
        raise TemplateError(f"{source} has no containers in spec.template.spec", hint="see `pypod template`")
    return _fill(parsed, values, command)
