import math
from collections import Counter

import pytest
import torch

from stimulative.core.sampling import (
    BRANCH,
    FULL,
    Architecture,
    SamplingSpace,
    SubnetSpec,
    delete_blocks,
    enumerate_subnets,
    parse_spec,
    permute_blocks,
    sample_subnet,
    select_subnets,
    step_generator,
)
from stimulative.models import create_model

ARCH = Architecture(((True, True, True), (False, True, True), (False, True, True)))  # resnet20


def test_ordered_text_round_trips():
    spec = SubnetSpec.ordered([2, 3, 1])
    assert spec.to_text() == "2,3,1"
    assert parse_spec("2,3,1") == spec
    assert spec.depths() == (2, 3, 1)


@pytest.mark.parametrize("text", ["0.2/0.1r.2r/0", "2/", "0/-/1", "0.2.1/0.1/0"])
def test_explicit_text_round_trips(text):
    assert parse_spec(text).to_text() == text


def test_explicit_prefix_form_prints_as_depths():
    assert parse_spec("0.1/0/0.1.2").to_text() == "2,1,3"


@pytest.mark.parametrize("bad", ["", "a,b", "1,-1", "0.x/1", "1r,2"])
def test_parse_rejects_garbage(bad):
    with pytest.raises(ValueError, match="spec"):
        parse_spec(bad)


def test_validate_rejects_impossible_specs():
    ARCH.validate(parse_spec("1,1,1"))
    with pytest.raises(ValueError, match="stages"):
        ARCH.validate(parse_spec("1,1"))
    with pytest.raises(ValueError, match="no block 3"):
        ARCH.validate(parse_spec("4,1,1"))
    with pytest.raises(ValueError, match="cannot be skipped"):
        ARCH.validate(parse_spec("1/1/0"))  # stage 1 without its downsampling block
    with pytest.raises(ValueError, match="identity"):
        ARCH.validate(parse_spec("0/0r/0"))


def test_space_sizes_match_enumeration():
    space = SamplingSpace.default(ARCH)
    assert space.depths == ((1, 2, 3),) * 3
    for sampler, size in [("ordered", 27), ("stochastic", 7 * 4 * 4), ("raw", 2**3 * 2**2 * 2**2)]:
        specs = list(enumerate_subnets(space, ARCH, sampler))
        assert len(specs) == len(set(specs)) == space.size(sampler, ARCH) == size
        for s in specs:
            ARCH.validate(s)


def test_min_depth_space_and_errors():
    resnet50 = create_model("resnet50").architecture
    space3 = SamplingSpace.from_min_depths(resnet50, [3, 3, 3, 3])
    assert space3.size() == 1 * 2 * 4 * 1  # ST++'s "space3" for stages (3, 4, 6, 3)
    assert SamplingSpace.default(resnet50).size() == 3 * 4 * 6 * 3 == 216
    with pytest.raises(ValueError, match="impossible depth 7"):
        SamplingSpace.from_min_depths(resnet50, [1, 1, 7, 1])
    with pytest.raises(ValueError, match="3 minimum depths given for 4 stages"):
        SamplingSpace.from_min_depths(resnet50, [1, 1, 1])
    with pytest.raises(ValueError, match="empty"):
        SamplingSpace(((), (1,), (1,))).checked(ARCH)


def test_mobilenetv3_default_space_has_the_papers_144_subnets():
    arch = create_model("mobilenetv3_large").architecture
    assert SamplingSpace.default(arch).size() == 144


def _draw(sampler, n, seed=0):
    gen = torch.Generator().manual_seed(seed)
    space = SamplingSpace.default(ARCH)
    return [sample_subnet(space, ARCH, sampler, gen) for _ in range(n)]


def test_ordered_sampler_is_uniform_over_depths():
    counts = Counter(s.depths() for s in _draw("ordered", 5400))
    assert len(counts) == 27
    for c in counts.values():  # expected 200 each; 5 sigma is about 70
        assert abs(c - 200) < 70


def test_stochastic_sampler_depths_uniform_and_subsets_in_order():
    specs = _draw("stochastic", 3000)
    depth_counts = Counter(len(s.stages[1]) for s in specs)
    assert set(depth_counts) == {1, 2, 3}
    for c in depth_counts.values():
        assert abs(c - 1000) < 150
    for s in specs:
        ARCH.validate(s)
        for stage in s.stages:
            idx = [b for b, _ in stage]
            assert idx == sorted(idx)
    # with depth 2 in stage 1, the kept skippable block is 1 or 2 with equal chance
    kept = Counter(s.stages[1][1][0] for s in specs if len(s.stages[1]) == 2)
    assert abs(kept[1] - kept[2]) < 0.2 * (kept[1] + kept[2])


def test_raw_sampler_paths_are_branch_only_and_fair():
    specs = _draw("raw", 4000)
    on = Counter()
    for s in specs:
        ARCH.validate(s)
        for st, stage in enumerate(s.stages):
            for b, path in stage:
                assert path == (BRANCH if ARCH.skippable[st][b] else FULL)
                on[(st, b)] += 1
    for (st, b), c in on.items():
        if ARCH.skippable[st][b]:
            assert abs(c - 2000) < 200


def test_sampling_is_reproducible_from_the_step_generator():
    space = SamplingSpace.default(ARCH)
    a = [sample_subnet(space, ARCH, "ordered", step_generator(3, k)) for k in range(20)]
    b = [sample_subnet(space, ARCH, "ordered", step_generator(3, k)) for k in range(20)]
    c = [sample_subnet(space, ARCH, "ordered", step_generator(4, k)) for k in range(20)]
    assert a == b and a != c


def test_unknown_sampler_lists_choices():
    with pytest.raises(ValueError, match="choose from ordered, stochastic, raw"):
        _draw("nope", 1)


def test_delete_and_permute():
    spec = delete_blocks(ARCH, [(0, 1), (2, 2)])
    assert spec.to_text() == "0.2/0.1.2/0.1"
    ARCH.validate(spec)
    with pytest.raises(ValueError, match="cannot be deleted"):
        delete_blocks(ARCH, [(1, 0)])
    perm = permute_blocks(ARCH, 1, [2, 1])
    assert [b for b, _ in perm.stages[1]] == [0, 2, 1]
    ARCH.validate(perm)
    with pytest.raises(ValueError, match="each skippable block once"):
        permute_blocks(ARCH, 1, [2, 2])


def test_select_subnets_enumerates_or_samples():
    space = SamplingSpace.default(ARCH)
    assert len(select_subnets(space, ARCH, 100)) == 27
    sample = select_subnets(space, ARCH, 10, seed=1)
    assert len(sample) == len(set(sample)) == 10
    assert sample == select_subnets(space, ARCH, 10, seed=1)
    assert math.comb(27, 10) > 1
