"""Mode schedules produce the documented sequences and reject unknown specs."""

import pytest

from semvlp_jax import schedule


def modes(spec, steps=8, **kwargs):
    s = schedule.parse(spec, **kwargs)
    return [s.mode(i) for i in range(steps)]


def test_fixed_sequences():
    assert modes('alternate') == ['single', 'two'] * 4
    assert modes('single') == ['single'] * 8
    assert modes('two') == ['two'] * 8
    assert modes('both') == ['both'] * 8
    assert modes('every:3') == ['single'] * 3 + ['two'] * 3 + ['single'] * 2
    assert modes('every:1') == modes('alternate')


def test_random_schedule_is_seeded_and_follows_p():
    a = modes('random', 2000, p_two_stream=0.25, seed=3)
    assert a == modes('random', 2000, p_two_stream=0.25, seed=3)
    assert a != modes('random', 2000, p_two_stream=0.25, seed=4)
    assert abs(a.count('two') / len(a) - 0.25) < 0.03
    # Pure function of the step: a resumed run sees the same modes.
    s = schedule.parse('random', p_two_stream=0.25, seed=3)
    assert [s.mode(i) for i in range(1500, 2000)] == a[1500:]


def test_compiled_modes():
    assert schedule.parse('alternate').modes == ('single', 'two')
    assert schedule.parse('both').modes == ('both',)
    assert schedule.parse('random', p_two_stream=1.0).modes == ('two',)


@pytest.mark.parametrize('spec', ['alternating', 'every:0', 'every:x', 'every:', 'three'])
def test_unknown_schedules_name_the_key(spec):
    with pytest.raises(ValueError, match='config.schedule'):
        schedule.parse(spec)


def test_random_probability_out_of_range():
    with pytest.raises(ValueError, match='config.p_two_stream'):
        schedule.parse('random', p_two_stream=1.5)
