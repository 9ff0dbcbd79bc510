# Module layering (ARCHITECTURE.md, "Dependency direction"): no module imports a module that
# imports it, in any crate's src/. scripts/check_module_cycles.py reads the `use` items and
# `crate::`/`super::`/`self::` paths (python3, standard library only, about a second); its
# own tests first check that it fails on the cycles the crates once had.
#
#   make module-cycles                 the tests of the check, then the check
#   python3 scripts/check_module_cycles.py --arrows   every arrow between sibling modules

TEST_STEPS += module-cycles

.PHONY: module-cycles

module-cycles: ## no module imports a module that imports it (scripts/check_module_cycles.py)
	python3 -B scripts/test_check_module_cycles.py
	python3 -B scripts/check_module_cycles.py
