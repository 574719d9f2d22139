"""The README's main command as a test (issue 18): scripts/demo.py up --small
runs kiln's whole story on two clusters of its own with real nodes (the
TrainingJob with a killed worker, the ModelDeployment's rollout and its
quality gate, requests through kiln-router throughout) and checks every
transition itself, exiting 1 with the reason when one does not happen. This
test runs it, then checks its summary (no failed request, each phase done)
and that `down` leaves nothing behind.

Needs build/images/kiln-{operator,router,worker}.tar (scripts/test.sh makes
them with scripts/images.sh before the tests). Run by CTest; by hand:
KILN_DEMO_TEST_DIR=/tmp/demo-test python3 tests/integration/demo_test.py
"""

import os
import re
import shutil
import subprocess
import sys
import tempfile
import unittest
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PHASES = ["clusters", "install", "fleet", "train", "serve v1", "roll out v2", "gate v3"]


class DemoTest(unittest.TestCase):
    def test_the_story(self):
        images = [ROOT / "build" / "images" / f"kiln-{n}.tar"
                  for n in ("operator", "router", "worker")]
        missing = [str(p) for p in images if not p.is_file()]
        if missing:
            self.skipTest(f"no images {missing}: scripts/images.sh makes them (scripts/test.sh "
                          "runs it)")
        base = os.environ.get("KILN_DEMO_TEST_DIR")
        tmp = None if base else tempfile.mkdtemp(prefix="kiln-demo-test-")
        run_dir = Path(base or tmp) / "demo"
        if run_dir.exists():
            shutil.rmtree(run_dir)
        demo = [sys.executable, str(ROOT / "scripts" / "demo.py")]
        try:
            up = subprocess.run(demo + ["up", "--small", "--dir", str(run_dir)],
                                capture_output=True, text=True, timeout=1500)
            print(up.stdout[-6000:])
            print(up.stderr[-3000:], file=sys.stderr)
            self.assertEqual(up.returncode, 0, "the demo stopped: see its output above")
            summary = up.stdout[up.stdout.index("kiln demo — summary"):]
            for phase in PHASES:
                self.assertRegex(summary, rf"\n  {re.escape(phase)} +\d+\.\d+s ", phase)
            requests = re.search(r"requests through kiln-router: (\d+), failed (\d+)", summary)
            self.assertIsNotNone(requests, summary)
            self.assertGreater(int(requests.group(1)), 0)
            self.assertEqual(int(requests.group(2)), 0, summary)
            self.assertIn("resumed from step", summary)
        finally:
            down = subprocess.run(demo + ["down", "--dir", str(run_dir)], capture_output=True,
                                  text=True, timeout=300)
            print(down.stdout[-2000:], down.stderr[-2000:])
            if tmp:
                shutil.rmtree(tmp, ignore_errors=True)
        self.assertEqual(down.returncode, 0, "the clusters' teardown left something behind")


if __name__ == "__main__":
    unittest.main(verbosity=2)
