"""A client generated from the OpenAPI document parses every saved answer without losing a field.

Usage: python3 tests/clients/openapi_models.py OPENAPI.json ANSWERS.json WORKDIR

OPENAPI.json is what `GET /v1/openapi.json` served. ANSWERS.json is a list of
`{"method", "path", "status", "content_type", "body"}`: `path` is the document's path template
(`/v1/tokens/{token}`), `body` the answer's text exactly as received ("" when there was none).

datamodel-code-generator turns the document's schemas into pydantic v2 models in WORKDIR, with
extra fields forbidden. Each answer is then looked up in the document (its operation, its status,
its content type) and parsed, strictly, by the model the document names there; the parsed model,
dumped back, must be the answer again. An answer fails if its status or content type is not
documented for its operation, if it does not parse (a field missing, of another type, or one the
model does not know), or if anything is lost or changed on the way.

Prints one line per answer and a summary line; exits 0 only if every answer parsed. Never prints
a value from an answer (a reveal's holds a card number): errors name fields and reasons only.
"""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

INSTALL = "python3 -m pip install -r tests/requirements.txt"


def generate(openapi: Path, workdir: Path):
    """The models module datamodel-code-generator writes for the document."""
    try:
        import datamodel_code_generator  # noqa: F401
        import pydantic
    except ImportError as e:
        sys.exit(f"missing Python package ({e.name}): {INSTALL}")
    if not pydantic.VERSION.startswith("2."):
        sys.exit(f"pydantic {pydantic.VERSION} is installed, v2 is needed: {INSTALL}")
    out = workdir / "panvault_models.py"
    cmd = [
        sys.executable, "-m", "datamodel_code_generator",
        "--input", str(openapi),
        "--input-file-type", "openapi",
        "--output", str(out),
        "--output-model-type", "pydantic_v2.BaseModel",
        "--extra-fields", "forbid",
        "--disable-timestamp",
    ]
    run = subprocess.run(cmd, capture_output=True, text=True)
    if run.returncode != 0:
        # Its messages name schemas and options, not answers.
        sys.exit(f"datamodel-codegen failed ({run.returncode}):\n{run.stderr[-4000:]}")
    spec = importlib.util.spec_from_file_location("panvault_models", out)
    module = importlib.util.module_from_spec(spec)
    # Registered first: pydantic resolves the models' forward references through it.
    sys.modules["panvault_models"] = module
    spec.loader.exec_module(module)
    return module


def resolve(doc, node):
    """Follows a local `$ref` (`#/components/...`) until a node without one."""
    while isinstance(node, dict) and "$ref" in node:
        ref = node["$ref"]
        if not ref.startswith("#/"):
            raise ValueError(f"not a local reference: {ref}")
        node = doc
        for part in ref[2:].split("/"):
            node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def schema_name(schema):
    """The component a content schema names, or None if it is inline."""
    ref = (schema or {}).get("$ref", "")
    prefix = "#/components/schemas/"
    return ref[len(prefix):] if ref.startswith(prefix) else None


def where(loc):
    return ".".join(str(x) for x in loc) or "(root)"


def differences(sent, parsed, loc=()):
    """Where `parsed` is not `sent`: key paths only, never values."""
    if isinstance(sent, dict) and isinstance(parsed, dict):
        out = []
        for k in sent.keys() - parsed.keys():
            out.append(f"{where(loc + (k,))} lost")
        for k in parsed.keys() - sent.keys():
            out.append(f"{where(loc + (k,))} added")
        for k in sent.keys() & parsed.keys():
            out.extend(differences(sent[k], parsed[k], loc + (k,)))
        return out
    if isinstance(sent, list) and isinstance(parsed, list):
        if len(sent) != len(parsed):
            return [f"{where(loc)} has {len(parsed)} items, not {len(sent)}"]
        out = []
        for i, (a, b) in enumerate(zip(sent, parsed)):
            out.extend(differences(a, b, loc + (i,)))
        return out
    if type(sent) is not type(parsed) or sent != parsed:
        return [f"{where(loc)} changed"]
    return []


def check(doc, models, answer):
    """The model that parsed the answer, or raises AssertionError naming what is wrong."""
    import pydantic

    method, path, status = answer["method"].lower(), answer["path"], answer["status"]
    op = doc.get("paths", {}).get(path, {}).get(method)
    assert op is not None, "the document has no such operation"
    responses = op.get("responses", {})
    response = responses.get(str(status)) or responses.get(f"{str(status)[0]}XX")
    assert response is not None, f"status {status} is not documented for the operation"
    response = resolve(doc, response)
    content = response.get("content") or {}
    body = answer["body"]
    if not content:
        assert body == "", "an answer the document says has no body has one"
        return "(no body)"
    ctype = (answer.get("content_type") or "").split(";")[0].strip().lower()
    assert ctype in content, f"content type {ctype!r} is not documented (only {sorted(content)})"
    name = schema_name(content[ctype].get("schema"))
    assert name, f"the {status} answer's schema is inline, not a named model"
    model = getattr(models, name, None)
    assert model is not None, f"no generated model {name}"
    try:
        parsed = model.model_validate_json(body, strict=True)
    except pydantic.ValidationError as e:
        reasons = [
            f"{where(err['loc'])}: {err['type']} ({err['msg']})"
            for err in e.errors(include_input=False, include_url=False)
        ]
        raise AssertionError(f"{name} does not parse it: " + "; ".join(reasons[:8])) from None
    dumped = parsed.model_dump(mode="json", by_alias=True, exclude_unset=True)
    lost = differences(json.loads(body), dumped)
    assert not lost, f"{name} loses or changes fields: " + "; ".join(sorted(lost)[:8])
    return name


def main():
    if len(sys.argv) != 4:
        sys.exit(__doc__.split("\n\n")[1])
    openapi, answers, workdir = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
    doc = json.loads(openapi.read_text())
    models = generate(openapi, workdir)
    answers = json.loads(answers.read_text())
    failed = 0
    for a in answers:
        what = f"{a['method'].upper()} {a['path']} {a['status']}"
        try:
            name = check(doc, models, a)
            print(f"ok     {what}: {name}")
        except AssertionError as e:
            failed += 1
            print(f"FAILED {what}: {e}")
    parsed = len(answers) - failed
    print(f"{parsed} of {len(answers)} answers parsed by the generated models, no field lost")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
