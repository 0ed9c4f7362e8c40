"""Write the generated Kubernetes objects (PrometheusRule, Grafana dashboard ConfigMap) from
``monitoring/`` into ``deploy/kubernetes/``; ``--check`` exits 1 when a committed file differs.

    python tools/kube_manifests.py            # regenerate
    python tools/kube_manifests.py --check    # what tests/integration/test_kubernetes_manifests.py runs
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from monitoring.kube import manifests  # noqa: E402

KUBE_DIR = ROOT / "deploy" / "kubernetes"


def main(argv: list[str]) -> int:
    check = "--check" in argv
    stale = []
    for relative, text in manifests().items():
        path = KUBE_DIR / relative
        if check:
            if not path.exists() or path.read_text() != text:
                stale.append(relative)
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        print(f"wrote deploy/kubernetes/{relative}")
    for relative in stale:
        print(f"stale: deploy/kubernetes/{relative} (run python tools/kube_manifests.py)")
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
