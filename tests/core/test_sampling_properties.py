"""Property-based tests (hypothesis) of the sub-network spec parser and the samplers."""

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stimulative.core.sampling import (
    BRANCH,
    FULL,
    SAMPLERS,
    Architecture,
    SamplingSpace,
    SubnetSpec,
    enumerate_subnets,
    parse_spec,
    sample_subnet,
    select_subnets,
    step_generator,
)

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# --- the spec parser --------------------------------------------------------------------

steps = st.tuples(st.integers(0, 40), st.sampled_from([FULL, BRANCH]))
specs = st.lists(st.lists(steps, max_size=6).map(tuple), min_size=1, max_size=5).map(lambda s: SubnetSpec(tuple(s)))


@FAST
@given(specs)
def test_any_spec_round_trips_through_text(spec):
    text = spec.to_text()
    assert parse_spec(text) == spec
    assert parse_spec(text).to_text() == text
    assert parse_spec(f"  {text}\n") == spec  # surrounding whitespace is ignored


@FAST
@given(st.lists(st.integers(0, 60), min_size=1, max_size=8))
def test_depths_text_is_the_ordered_spec(depths):
    text = ",".join(map(str, depths))
    spec = parse_spec(text)
    assert spec == SubnetSpec.ordered(depths)
    assert spec.depths() == tuple(depths)
    assert spec.to_text() == text


@FAST
@given(specs)
def test_ordered_specs_print_as_depths(spec):
    depths = spec.depths()
    if depths is not None:
        assert spec.to_text() == ",".join(map(str, depths))
        assert spec == SubnetSpec.ordered(depths)
    else:
        assert "/" in spec.to_text()


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="0123456789,./-r x", max_size=20) | st.text(max_size=12))
def test_parser_accepts_or_raises_value_error(text):
    """Any text either parses into a spec whose text parses back to it, or is refused with
    a ValueError naming the spec, never another exception."""
    try:
        spec = parse_spec(text)
    except ValueError as e:
        assert "spec" in str(e)
        return
    assert all(b >= 0 and p in (FULL, BRANCH) for stage in spec.stages for b, p in stage)
    assert parse_spec(spec.to_text()) == spec


def test_a_huge_depth_is_refused_not_built():
    """'99999999999' once made the parser build a tuple of 10^11 blocks (out of memory)."""
    with pytest.raises(ValueError, match="cannot parse sub-network spec"):
        parse_spec("99999999999")
    assert len(parse_spec("100000").stages[0]) == 100_000


# --- architectures, spaces and samplers -------------------------------------------------


@st.composite
def arch_and_space(draw):
    """A small architecture (stages whose first block may change the shape) and a random
    sampling space of it: per stage a non-empty subset of the possible depths."""
    n_stages = draw(st.integers(1, 3))
    skippable, depths = [], []
    for _ in range(n_stages):
        n = draw(st.integers(1, 4))
        fixed_first = draw(st.booleans())
        skip = tuple(not (fixed_first and b == 0) for b in range(n))
        skippable.append(skip)
        lowest = sum(1 for k in skip if not k)
        allowed = draw(st.sets(st.integers(lowest, n), min_size=1))
        depths.append(tuple(sorted(allowed)))
    arch = Architecture(tuple(skippable))
    return arch, SamplingSpace(tuple(depths)).checked(arch)


@FAST
@given(arch_and_space(), st.sampled_from(SAMPLERS), st.integers(0, 2**31), st.integers(0, 10_000))
def test_sampled_subnets_are_valid_and_in_the_space(arch_space, sampler, seed, step):
    arch, space = arch_space
    spec = sample_subnet(space, arch, sampler, step_generator(seed, step))
    arch.validate(spec)  # runs on the architecture
    assert spec in set(enumerate_subnets(space, arch, sampler))
    for s, (stage, allowed, skip) in enumerate(zip(spec.stages, space.depths, arch.skippable, strict=True)):
        blocks = [b for b, _ in stage]
        assert blocks == sorted(blocks), f"stage {s} runs its blocks out of order"
        assert all(skip[b] for b, p in stage if p == BRANCH)  # only skippable blocks unravel
        assert all(b in blocks for b, k in enumerate(skip) if not k)  # shape-changing blocks always run
        if sampler == "ordered":
            assert blocks == list(range(len(blocks))) and len(blocks) in allowed
        elif sampler == "stochastic":
            assert len(blocks) in allowed and all(p == FULL for _, p in stage)
        else:  # raw: every block runs, whole if shape-changing, else its branch alone, or not at all
            assert all(p == (BRANCH if skip[b] else FULL) for b, p in stage)
    if sampler == "ordered":
        assert spec.depths() is not None


@FAST
@given(arch_and_space(), st.sampled_from(SAMPLERS), st.integers(0, 2**31), st.integers(0, 10_000))
def test_sampling_is_a_pure_function_of_seed_and_step(arch_space, sampler, seed, step):
    arch, space = arch_space
    draw = lambda: [sample_subnet(space, arch, sampler, gen) for gen in [step_generator(seed, step)] for _ in range(3)]  # noqa: E731
    assert draw() == draw()


@FAST
@given(arch_and_space(), st.sampled_from(SAMPLERS))
def test_enumeration_matches_size_and_is_distinct(arch_space, sampler):
    arch, space = arch_space
    every = list(enumerate_subnets(space, arch, sampler))
    assert len(every) == len(set(every)) == space.size(sampler, arch)
    for spec in every:
        arch.validate(spec)
        assert parse_spec(spec.to_text()) == spec


@FAST
@given(arch_and_space(), st.integers(1, 12), st.integers(0, 1000))
def test_select_subnets_is_a_distinct_subset_of_the_space(arch_space, count, seed):
    arch, space = arch_space
    chosen = select_subnets(space, arch, count, seed)
    assert len(chosen) == len(set(chosen)) == min(count, space.size("ordered"))
    assert set(chosen) <= set(enumerate_subnets(space, arch, "ordered"))
    assert chosen == select_subnets(space, arch, count, seed)


@FAST
@given(arch_and_space())
def test_min_depths_space_holds_exactly_the_depths_from_the_minimum(arch_space):
    arch, space = arch_space
    mins = [min(a) for a in space.depths]
    full = SamplingSpace.from_min_depths(arch, mins)
    assert full.depths == tuple(tuple(range(m, n + 1)) for m, n in zip(mins, arch.stage_sizes, strict=True))
    assert arch.full() in set(enumerate_subnets(full, arch, "ordered"))


@FAST
@given(arch_and_space(), st.integers(0, 6), st.integers(0, 2))
def test_impossible_min_depths_are_refused(arch_space, extra, stage):
    arch, _ = arch_space
    stage %= len(arch.stage_sizes)
    mins = [
        max(1, sum(1 for k in skip if not k)) if n else 0
        for skip, n in zip(arch.skippable, arch.stage_sizes, strict=True)
    ]
    mins = [min(m, n) for m, n in zip(mins, arch.stage_sizes, strict=True)]
    mins[stage] = arch.stage_sizes[stage] + 1 + extra
    with pytest.raises(ValueError):
        SamplingSpace.from_min_depths(arch, mins)
    with pytest.raises(ValueError, match="minimum depths given"):
        SamplingSpace.from_min_depths(arch, mins + [1])
