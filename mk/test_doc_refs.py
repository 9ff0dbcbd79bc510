"""mk/doc_refs.py finds a broken reference of each kind, planted in a document, and lets the
same document through with the reference repaired. Runs against the repository's own code.
`python3 -m unittest discover -s mk -p 'test_doc_refs.py'`."""

import sys
import unittest
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import doc_refs  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent

# (document, broken text, the same text repaired, what the finding names)
PLANTED = [
    ("docs/x.md", "Set `var.function_zip_path`.", "Set `var.package_url`.", "function_zip_path"),
    ("docs/x.md", "Roll back: set `function_zip_path` and apply.", "Roll back: set `package_url` and apply.", "function_zip_path"),
    ("docs/x.md", "Read `module.scalehook.hook_url`.", "Read `module.scalehook.webhook_url`.", "hook_url"),
    ("docs/x.md", "    terraform output hook_url\n", "    terraform output webhook_url\n", "hook_url"),
    ("docs/x.md", "Export `SCALEHOOK_WEBHOOK_SECRETS`.", "Export `SCALEHOOK_WEBHOOK_SECRET`.", "SCALEHOOK_WEBHOOK_SECRETS"),
    ("docs/x.md", "Run `scalehook serve --port 8080`.", "Run `scalehook serve --listen 127.0.0.1:8080`.", "--port"),
    ("docs/x.md", "```sh\ncargo run -q -p scalehook-cli -- replay --dry-run x.json\n```\n",
     "```sh\ncargo run -q -p scalehook-cli -- replay --json x.json\n```\n", "--dry-run"),
    ("docs/x.md", "```sh\nscalehook simulate t.jsonl \\\n  --boot-secs 90\n```\n",
     "```sh\nscalehook simulate t.jsonl \\\n  --boot-seconds 90\n```\n", "--boot-secs"),
    ("docs/x.md", "Run `scalehook replays x.json`.", "Run `scalehook replay x.json`.", "replays"),
    ("docs/x.md", "```toml\n[[pools]]\nname = \"a\"\nlabel = [\"x\"]\n```\n",
     "```toml\n[[pools]]\nname = \"a\"\nlabels = [\"x\"]\n```\n", "label"),
    ("docs/x.md", "```toml\n[ledger]\n# in_progress_ttl = 518400\n```\n",
     "```toml\n[ledger]\n# in_progress_ttl_secs = 518400\n```\n", "in_progress_ttl"),
    ("docs/x.md", "```toml\n[[pools]]\nname = \"a\"\nmax_body_bytes = 1\n```\n",
     "```toml\nmax_body_bytes = 1\n[[pools]]\nname = \"a\"\n```\n", "max_body_bytes"),
    ("docs/configuration.md", "## `[github]`\n\n| `hook_name` | 1 |\n", "## `[github]`\n\n| `app_id` | 1 |\n", "hook_name"),
    ("docs/x.md", "Then `make lambda-zips`.", "Then `make lambda-zip`.", "lambda-zips"),
    ("docs/x.md", "See [the runbook](runbook.md#roll-back-a-zip).", "See [the runbook](runbook.md#roll-back-the-zip).", "roll-back-a-zip"),
    ("docs/x.md", "See [Azure](../docs/azur.md).", "See [Azure](../docs/azure.md).", "azur.md"),
    ("docs/x.md", "# Title\n\nSee [below](#the-end).\n", "# Title\n\nSee [below](#title).\n", "the-end"),
    ("infra/aws/README.md", "## Inputs and outputs\n\n| `function_zip_path` | string |\n",
     "## Inputs and outputs\n\n| `lambda_zip_path` | string |\n", "function_zip_path"),
]


class PlantedReferences(unittest.TestCase):
    def test_each_broken_reference_is_found_and_its_repair_passes(self):
        for path, broken, repaired, name in PLANTED:
            with self.subTest(path=path, broken=broken):
                found = doc_refs.check(ROOT, {path: broken})
                self.assertTrue(found, f"not found: {broken!r}")
                self.assertTrue(any(name in str(f) for f in found), [str(f) for f in found])
                self.assertEqual([str(f) for f in doc_refs.check(ROOT, {path: repaired})], [])

    def test_the_finding_names_file_and_line(self):
        found = doc_refs.check(ROOT, {"docs/x.md": "one\ntwo `SCALEHOOK_NOPE`\n"})
        self.assertEqual([str(f) for f in found], ["docs/x.md:2: environment variable SCALEHOOK_NOPE is not named by the code"])

    def test_prose_and_program_output_are_not_commands(self):
        text = "The first line is `scalehook listening on http://ADDR/webhook`.\n\n    metric  scalehook scalehook-webhook-only\n"
        self.assertEqual([str(f) for f in doc_refs.check(ROOT, {"docs/x.md": text})], [])

    def test_the_main_exits_1_on_a_broken_reference(self):
        # The command itself over the repository: clean now (make test runs it too).
        self.assertEqual([str(f) for f in doc_refs.check(ROOT)], [])


if __name__ == "__main__":
    unittest.main()
