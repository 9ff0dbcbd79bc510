# The documentation names only what exists. Terraform variables and outputs, SCALEHOOK_*
# environment variables, CLI commands and flags, configuration keys, make targets and relative
# links named in README.md, docs/*.md and infra/**/README.md are checked against the code and
# the tree by mk/doc_refs.py (Python 3 standard library); its test plants a broken reference
# of each kind and checks that it is found.

TEST_STEPS += doc-refs

.PHONY: doc-refs

doc-refs: ## check that the docs name only variables, outputs, env vars, flags, config keys and make targets that exist
	PYTHONDONTWRITEBYTECODE=1 python3 -m unittest discover -s mk -p 'test_doc_refs.py'
	python3 mk/doc_refs.py
