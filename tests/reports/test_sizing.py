"""Target parsing and the sizing arithmetic."""

from __future__ import annotations

import pytest

from reports.sizing import Capacity, Target, parse_target, size


def test_parse_target_fields_and_units() -> None:
    target = parse_target("cps=300,users=50000,reregister=600s")
    assert target == Target(cps=300.0, users=50000, reregister_s=600.0)
    assert target.registrations_per_s == pytest.approx(50000 / 600)
    assert parse_target("users=10, reregister=10m").reregister_s == 600.0
    assert parse_target("cps=2.5").users == 0
    assert str(parse_target(str(target))) == str(target)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("cps=lots", "target: cps: 'lots' is not a number"),
        ("users=1e4", "target: users: '1e4' is not an integer"),
        ("reregister=soon", "target: reregister: 'soon' is not a duration"),
        ("bhca=5", "target: 'bhca': unknown field"),
        ("cps", "target: 'cps': expected field=value"),
        ("cps=1,cps=2", "target: cps: given twice"),
        ("cps=-3", "target: cps: must be >= 0"),
        ("", "target: empty"),
    ],
)
def test_parse_target_errors_name_the_field(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        parse_target(text)


def test_size_arithmetic() -> None:
    # calls: 300 / 1000 per core = 0.3 core; registrations: 50000/600 = 83.33/s / 250 = 0.333 core
    # router: ceil(0.6333 * 1.3 = 0.8233) = 1; PBX: ceil(300 * 1.3 / 120 = 3.25) = 4, N+1 = 5
    verdict = size(
        parse_target("cps=300,users=50000,reregister=600s"),
        Capacity(router_cps_per_core=1000, router_regs_per_core=250, pbx_cps_per_node=120),
    )
    assert verdict.router_cores == 1
    assert verdict.pbx_nodes == 4
    assert verdict.pbx_nodes_n_plus_1 == 5
    text = "\n".join(verdict.lines)
    assert "83.33/s" in text
    assert "ceil(0.823) = 1" in text
    assert "ceil(3.250) = 4" in text
    assert "sized from the EMULATOR" in text  # the verdict itself says which node it measured
    real = size(
        parse_target("cps=300"),
        Capacity(router_cps_per_core=1000, pbx_cps_per_node=120, pbx_kind="asterisk"),
    )
    assert "real Asterisk 22" in "\n".join(real.lines)
    assert "EMULATOR" not in "\n".join(real.lines)
    assert any("Loopback" in line for line in verdict.limits)


def test_size_scales_and_headroom() -> None:
    cap = Capacity(router_cps_per_core=100, router_regs_per_core=100, pbx_cps_per_node=50)
    verdict = size(Target(cps=1000, users=0), cap, headroom=0.5)
    assert verdict.router_cores == 15  # 10 cores x 1.5
    assert verdict.pbx_nodes == 30
    exact = size(Target(cps=100, users=0), cap, headroom=0.0)
    assert exact.router_cores == 1  # exactly one core is enough: no rounding up past it
    assert exact.pbx_nodes == 2


def test_size_missing_measurement_is_said() -> None:
    verdict = size(
        parse_target("cps=10,users=600,reregister=60s"), Capacity(router_cps_per_core=50)
    )
    assert verdict.router_cores is None
    assert verdict.pbx_nodes is None
    assert any("registrations: not measured" in line for line in verdict.lines)
    with pytest.raises(ValueError, match="headroom"):
        size(Target(cps=1), Capacity(), headroom=-0.1)
