#!/usr/bin/env python3
"""Tests of check_module_cycles.py on small crates written to a temporary directory: the
import cycles the core, the simulator and the Azure crate had (each must fail), and the
patterns the rule allows (each must pass). Run: python3 scripts/test_check_module_cycles.py"""

import io
import os
import sys
import tempfile
import textwrap
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import check_module_cycles  # noqa: E402


class ModuleCycles(unittest.TestCase):
    def run_check(self, files):
        """Writes `files` ({path under src/: text}) as one crate; returns (cycles, output)."""
        with tempfile.TemporaryDirectory() as crate:
            for path, text in files.items():
                full = os.path.join(crate, "src", path)
                os.makedirs(os.path.dirname(full), exist_ok=True)
                with open(full, "w", encoding="utf-8") as f:
                    f.write(textwrap.dedent(text))
            out = io.StringIO()
            n = check_module_cycles.check([crate], out=out)
            return n, out.getvalue()

    def test_two_modules_that_import_each_other_fail(self):
        # fleet took Clock from service, which imports fleet.
        n, out = self.run_check(
            {
                "lib.rs": "pub mod fleet;\npub mod service;\n",
                "fleet.rs": """
                    pub struct LocalFleet { clock: Option<std::sync::Arc<dyn crate::service::Clock>> }
                """,
                "service.rs": """
                    use crate::fleet::LocalFleet;
                    pub trait Clock {}
                """,
            }
        )
        self.assertEqual(n, 1, out)
        self.assertIn("fleet, service import each other", out)
        self.assertIn("fleet.rs:2 crate::service::Clock", out)
        self.assertIn("service.rs:2 crate::fleet::LocalFleet", out)

    def test_a_longer_cycle_fails(self):
        # policy -> metrics (Census), metrics -> service (ReconcileReport), service -> policy.
        n, out = self.run_check(
            {
                "lib.rs": "mod metrics;\nmod policy;\nmod service;\n",
                "policy.rs": "pub fn census() -> crate::metrics::Census { todo!() }\n",
                "metrics.rs": "use crate::service::ReconcileReport;\npub struct Census;\n",
                "service.rs": "use crate::policy::census;\npub struct ReconcileReport;\n",
            }
        )
        self.assertEqual(n, 1, out)
        self.assertIn("metrics, policy, service import each other", out)

    def test_a_cycle_through_a_re_export_fails(self):
        # table re-exported ledger::TableLedger while ledger uses table.
        n, out = self.run_check(
            {
                "lib.rs": "pub mod ledger;\npub mod table;\n",
                "ledger.rs": "use crate::table::{BatchOp, TableClient};\npub struct TableLedger;\n",
                "table.rs": "pub use crate::ledger::TableLedger;\npub struct BatchOp;\npub struct TableClient;\n",
            }
        )
        self.assertEqual(n, 1, out)
        # A path through the crate root's re-export counts for the module that defines it.
        n, out = self.run_check(
            {
                "lib.rs": "pub mod clock;\npub mod fleet;\npub use clock::Clock;\n",
                "clock.rs": "use crate::fleet::Fleet;\npub trait Clock {}\n",
                "fleet.rs": "use crate::Clock;\npub trait Fleet {}\n",
            }
        )
        self.assertEqual(n, 1, out)
        self.assertIn("fleet.rs:1 crate::Clock", out)

    def test_siblings_inside_a_module_fail_too(self):
        # Children of service may use service's items, but not each other both ways.
        n, out = self.run_check(
            {
                "lib.rs": "pub mod service;\n",
                "service/mod.rs": "mod converge;\nmod delivery;\npub struct Service;\n",
                "service/converge.rs": "use super::Service;\nuse super::delivery::is_json;\npub struct Pass;\n",
                "service/delivery.rs": "use super::converge::Pass;\npub fn is_json() {}\n",
            }
        )
        self.assertEqual(n, 1, out)
        self.assertIn("under crate::service: converge, delivery import each other", out)

    def test_test_modules_count(self):
        # An inline `mod tests` belongs to its file's module: its imports are that module's.
        n, out = self.run_check(
            {
                "lib.rs": "mod a;\nmod b;\n",
                "a.rs": """
                    pub struct A;
                    #[cfg(test)]
                    mod tests {
                        use super::*;
                        use crate::b::B;
                    }
                """,
                "b.rs": "use crate::a::A;\npub struct B;\n",
            }
        )
        self.assertEqual(n, 1, out)

    def test_parents_and_children_may_use_each_other(self):
        # The `impl` blocks of a stage in a child module, the parent's fields of the
        # children's types, re-exports of children's items, and arrows that point one way.
        n, out = self.run_check(
            {
                "lib.rs": """
                    pub mod clock;
                    pub mod fleet;
                    pub mod service;
                    pub use clock::Clock;
                    pub use service::{Service, EVENT_HEADER};
                """,
                "clock.rs": "pub trait Clock {}\n",
                "fleet.rs": "use crate::Clock;\npub struct LocalFleet;\n",
                "service/mod.rs": """
                    mod converge;
                    mod delivery;
                    pub use delivery::EVENT_HEADER;
                    use converge::PoolSlot;
                    use crate::fleet::LocalFleet;
                    pub struct Service { slots: Vec<PoolSlot>, fleet: LocalFleet }
                """,
                "service/converge.rs": """
                    use super::Service;
                    pub(super) struct PoolSlot;
                    impl Service { pub(super) fn converge(&self) {} }
                """,
                "service/delivery.rs": """
                    use super::converge::PoolSlot;
                    use super::Service;
                    pub const EVENT_HEADER: &str = "x";
                    impl Service { pub fn handle(&self) { let _ = crate::clock::Clock::now; } }
                    #[cfg(test)]
                    mod tests { use super::*; use super::super::Service as S; }
                """,
            }
        )
        self.assertEqual(n, 0, out)
        self.assertIn("0 cycles", out)

    def test_comments_and_strings_are_not_imports(self):
        n, out = self.run_check(
            {
                "lib.rs": "mod a;\nmod b;\n",
                "a.rs": """
                    //! Links to [`crate::b::B`] in docs are not imports.
                    pub struct A; /* nor crate::b::B here */
                    pub const S: &str = "crate::b::B";
                    pub const R: &str = r#"crate::b::B "quoted" "#;
                    pub const C: char = '"';
                    pub fn f<'a>(x: &'a str) -> &'a str { x }
                """,
                "b.rs": "use crate::a::A;\npub struct B;\n",
            }
        )
        self.assertEqual(n, 0, out)


if __name__ == "__main__":
    unittest.main()
