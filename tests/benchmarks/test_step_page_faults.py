"""`benchmarks.step_page_faults`: the counting and the table.

`python -m benchmarks.run_all --quick` runs the benchmark itself.
"""

from benchmarks import step_page_faults


def test_count_sees_the_pages_a_step_faults_in():
    def step():
        # 128 MiB of fresh memory, written: 32,768 pages of 4 KiB (glibc
        # maps blocks over 32 MiB afresh by default, and unmaps them; numpy
        # would ask for huge pages).
        return b"\x01" * 2**27

    assert step_page_faults.count(step)["faults"] > 16000
    assert step_page_faults.count(lambda: None)["faults"] < 100


def test_report_rows():
    counts = {"faults": 500_000.0, "system_s": 1.0, "peak_mib": 2900.0}
    rows = [
        ("jax", False, counts),
        ("jax", True, {**counts, "faults": 12.0, "system_s": 0.01}),
    ]
    text = step_page_faults.report(rows, False, 10.0, "here")
    lines = text.splitlines()
    assert "| Keras-JAX | glibc default | 500,000 | 1,953 | 1.00 | 2,900 |" in (
        lines
    )
    assert "| Keras-JAX | freed memory retained | 12 | 0 | 0.01 | 2,900 |" in (
        lines
    )
    assert "timm not measured" in text
