"""The main job (`make run`): train the baseline, attack it, defend it, attack it again, and
print clean against attacked, before against after."""

from dataclasses import replace

from ..attacks import check_attack
from ..config import AttackConfig, DefendConfig, MainConfig
from ..defenses import parse_spec
from .attack import run_attack
from .defend import run_defend
from .report import format_table
from .train import run_train


def strip_prefix(values, prefix):
    """{name without prefix: value} of the metrics that carry `prefix`, plus fooling_rate."""
    out = {k[len(prefix):]: v for k, v in values.items() if k.startswith(prefix)}
    if "fooling_rate" in values and prefix != "clean_":
        out["fooling_rate"] = values["fooling_rate"]
    return out


def run_main(config: MainConfig):
    """Train, run each attack white-box on the test split, then defend and measure the
    defended model (transfer and white-box). Returns {'attacks': {column: metrics},
    'defense': the defend step's before/after table or None}."""
    for method in config.attacks:  # refuse a bad request before minutes of training
        check_attack(method, config.eps, "inf")
    defended = bool(parse_spec(config.defense))
    train = config.train
    result = run_train(train)
    print(f"\nrun {result.run_id}  model {result.model_uri}"
          + (f"  registered {result.registered_name} v{result.version}" if result.version else ""))
    columns = {"clean": strip_prefix(result.metrics, "clean_")}
    for method in config.attacks:
        attack = AttackConfig(model_uri=result.model_uri, data=train.data, method=method, eps=config.eps,
                              max_steps=config.uap_max_steps, seed=train.seed, experiment=train.experiment)
        outcome = run_attack(replace(attack, run_name=f"attack-{method}"))
        columns[f"{method} {config.eps * 255:g}/255"] = strip_prefix(outcome.metrics, "adv_")
        print(f"attack run {outcome.run_id}: {method}")
    print("\nthe baseline, clean and attacked (white-box)")
    print(format_table(columns))
    table = None
    if defended:
        defense = run_defend(DefendConfig(
            model_uri=result.model_uri, data=train.data, defense=config.defense, rounds=config.rounds,
            epochs_per_round=config.epochs_per_round, retrain_eps=config.eps, eval_attacks=config.attacks,
            eval_eps=config.eps, uap_max_steps=config.uap_max_steps, seed=train.seed, experiment=train.experiment,
            register=train.register,
        ))
        table = defense.table
        print(f"\ndefend run {defense.run_id}: {config.defense}, model {defense.model_uri}"
              + (f"  registered {defense.registered_name} v{defense.version} @candidate" if defense.version else ""))
        print("before (parent) and after (defended); transfer = the parent's adversarial images")
        print(format_table(table))
    return {"attacks": columns, "defense": table}
