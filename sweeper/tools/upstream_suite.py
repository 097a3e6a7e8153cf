"""Run hydra-optuna-sweeper's own test suite against this sweeper, renames only.

    python sweeper/tools/upstream_suite.py PATH/TO/hydra/plugins/hydra_optuna_sweeper

PATH is a checkout of facebookresearch/hydra (its plugin folder, with example/ and tests/); nothing
of it is kept here. The suite is copied to a temporary folder, upstream's names are replaced by
this sweeper's (`hydra/sweeper/sampler` -> `hydra/sweeper/optuna_sampler`, the plugin's classes,
its `_impl` parsing functions by a two-function shim over optuna_pruning.search_space), and pytest
runs it. Assertions are not touched; the one harness change is a warning filter for Hydra 1.3's
version_base notice, which upstream's examples (written for Hydra 1.4) raise under -Werror.
Expected differences: the three cases of `range(a, b)`, which stops before b here as in Hydra."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

SHIM = '''from optuna_pruning.search_space import parse_search_space


def create_optuna_distribution_from_override(parsed):
    return parse_search_space({}, [parsed.input_line]).distributions["key"]


def create_params_from_overrides(args):
    space = parse_search_space({}, list(args))
    return space.distributions, space.fixed, list(space.deletions)
'''
RENAMES = {
    "from hydra_plugins.hydra_optuna_sweeper import _impl": "import upstream_impl as _impl",
    "from hydra_plugins.hydra_optuna_sweeper.config import": "from hydra_plugins.optuna_pruning_sweeper.config import",
    "from hydra_plugins.hydra_optuna_sweeper.optuna_sweeper import OptunaSweeper":
        "from hydra_plugins.optuna_pruning_sweeper.sweeper import OptunaPruningSweeper as OptunaSweeper",
    "hydra/sweeper/sampler=": "hydra/sweeper/optuna_sampler=",
    "chdir_plugin_root()": "os.chdir(Path(__file__).parent.parent)",
    "run_python_script([SQLALCHEMY_UTC_WARNING_FILTER, *cmd])":
        "run_python_script([SQLALCHEMY_UTC_WARNING_FILTER, '-W ignore::UserWarning', *cmd])",
}


def main() -> None:
    upstream = Path(sys.argv[1])
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for part in ("example", "tests"):
            shutil.copytree(upstream / part, root / part)
        (root / "shim").mkdir()
        (root / "shim" / "upstream_impl.py").write_text(SHIM)
        test = root / "tests" / "test_optuna_sweeper_plugin.py"
        text = test.read_text()
        for old, new in RENAMES.items():
            text = text.replace(old, new)
        test.write_text(text)
        for config in [*root.glob("example/**/*.yaml"), *root.glob("tests/conf/*.yaml")]:
            config.write_text(config.read_text().replace("hydra/sweeper/sampler:", "hydra/sweeper/optuna_sampler:"))
        done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "addopts=",
                               "tests"], cwd=root, env={**os.environ, "PYTHONPATH": str(root / "shim")})
    sys.exit(done.returncode)


if __name__ == "__main__":
    main()
