"""The public surface: `tenantlb.__all__` is sorted, complete and importable."""

from __future__ import annotations

import subprocess
import sys
import types

import tenantlb


def test_all_is_sorted_and_unique() -> None:
    """`__all__` is one sorted list without duplicates."""
    names = [n for n in tenantlb.__all__ if n != "__version__"]
    assert names == sorted(names)
    assert len(set(tenantlb.__all__)) == len(tenantlb.__all__)


def test_all_matches_public_names() -> None:
    """Every public name in the package namespace is in `__all__`, and every name there exists."""
    public = {
        name
        for name, value in vars(tenantlb).items()
        if not name.startswith("_")
        and not isinstance(value, types.ModuleType)
        and name != "annotations"
    }
    assert public == set(tenantlb.__all__) - {"__version__"}
    for name in tenantlb.__all__:
        assert hasattr(tenantlb, name), name


def test_public_classes_live_in_tenantlb() -> None:
    """Re-exported names present themselves under the `tenantlb` package."""
    for name in tenantlb.__all__:
        obj = getattr(tenantlb, name)
        module = getattr(obj, "__module__", "tenantlb")
        assert module.startswith("tenantlb"), (name, module)


def test_public_classes_and_functions_say_tenantlb() -> None:
    """Classes and functions re-exported at the top show `tenantlb` as their module (httpx-style)."""
    for name in tenantlb.__all__:
        obj = getattr(tenantlb, name)
        if isinstance(obj, type | types.FunctionType):
            assert obj.__module__ == "tenantlb", (name, obj.__module__)


def test_extension_author_names_are_exported() -> None:
    """What a balancer, algorithm, resolver or store author needs is importable publicly."""
    from tenantlb import balancing, ratelimit, tenants

    for module, names in (
        (tenantlb, ["Algorithm", "Balancer", "BalancerBase", "Admission", "register_balancer"]),
        (balancing, ["BALANCERS", "EndpointState", "register_balancer"]),
        (
            ratelimit,
            ["ALGORITHMS", "EPSILON", "Kernel", "KernelResult", "STORES", "State", "Step"],
        ),
        (tenants, ["RESOLVERS", "register_resolver"]),
    ):
        for name in names:
            assert name in module.__all__, (module.__name__, name)
            assert hasattr(module, name), (module.__name__, name)


def test_import_without_dnspython() -> None:
    """`import tenantlb` works without the optional dnspython; DNSDiscovery then names the extra."""
    code = (
        "import sys; sys.modules['dns'] = None\n"  # makes `import dns` raise ImportError
        "import tenantlb as tlb\n"
        "try:\n"
        "    tlb.DNSDiscovery(tlb.Pool([]), 'svc.internal', port=80)\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert "pip install 'tenantlb[dns]'" in out.stdout
