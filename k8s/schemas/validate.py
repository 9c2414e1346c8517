"""Validate the Istio resources under k8s/ against the JSON schemas beside
this file. Kubernetes core resources are checked by kubernetes-validate."""

import json
import pathlib
import sys

import jsonschema
import yaml

SCHEMAS = pathlib.Path(__file__).parent
ROOT = SCHEMAS.parent


def main() -> int:
    failures = 0
    checked = 0
    for path in sorted(ROOT.rglob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            if not document:
                continue
            group = document.get("apiVersion", "").split("/")[0]
            schema_path = SCHEMAS / f"{group}_{document.get('kind')}.json"
            if not schema_path.exists():
                continue
            schema = json.loads(schema_path.read_text())
            errors = list(jsonschema.Draft202012Validator(schema).iter_errors(document))
            checked += 1
            for error in errors:
                failures += 1
                location = "/".join(str(p) for p in error.absolute_path)
                print(f"{path.relative_to(ROOT)}: {document['kind']}/{document['metadata']['name']}: {location}: {error.message}")
    print(f"checked {checked} Istio resources, {failures} problems")
    return 1 if failures or checked == 0 else 0


if __name__ == "__main__":
    sys.exit(main())
