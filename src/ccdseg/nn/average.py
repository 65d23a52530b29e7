"""Weight-space averaging of fine-tunes with the model they started from (WiSE-FT, Wortsman et al. 2022).

A fine-tune on new data (a detector's measured defects, real-readout effects) learns them and drifts a little
everywhere else. Fine-tunes of one start model stay in one basin of the loss, so the straight line between
the start's weights and the mean of the fine-tunes' weights passes through models that keep most of what
each learned: part of the way along it, the start's behaviour on its own data is kept and the new data's
gain stays. ``python benchmarks/accuracy.py --model OUT`` measures both sides.
"""

from ccdseg.errors import ConfigError
from ccdseg.nn.model import load_model, save_model
from ccdseg.nn.train import parent_facts


def average_models(start, finetuned, *, weight, out):
    """Write ``(1 - weight) x start + weight x mean(finetuned)``, weight by weight, as a model file.

    Parameters
    ----------
    start : str or path-like or None
        The model the fine-tunes started from (None: the shipped model).
    finetuned : sequence of str or path-like
        Fine-tunes of ``start`` (``ccdseg train --init START``): same architecture and normalisation.
    weight : float
        Share of the fine-tunes, in (0, 1]; 1 gives their plain average (a "model soup").
    out : str or path-like
        Model file to write (atomically).

    Returns
    -------
    pathlib.Path or str
        ``out``. Its metadata records ``weight`` and what each of the models was trained on.

    Raises
    ------
    ConfigError
        On a weight outside (0, 1], no fine-tune, or a fine-tune of another architecture or normalisation.
    ModelFileError
        If a model file cannot be read.
    """
    if not 0.0 < weight <= 1.0:
        raise ConfigError(f"average: weight must be in (0, 1], got {weight}")
    if not finetuned:
        raise ConfigError("average: give at least one fine-tuned model")
    base = load_model(start)
    others = [load_model(path) for path in finetuned]
    for model in others:
        if model.arch != base.arch or model.normalization != base.normalization:
            raise ConfigError(f"average: {model.path} is not a fine-tune of {base.path} "
                              "(its architecture or normalisation differs)")
    states = [model.net.state_dict() for model in others]
    averaged = {key: (1.0 - weight) * value + weight * sum(state[key] for state in states) / len(states)
                for key, value in base.net.state_dict().items()}
    base.net.load_state_dict(averaged)
    facts = [{**parent_facts(model), "train_config": model.metadata.get("train_config")} for model in others]
    save_model(out, base.net, base.arch, base.normalization, parent=parent_facts(base),
               averaged={"weight": float(weight), "finetuned": facts})
    return out
