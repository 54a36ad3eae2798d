"""`medrobust <step> [options]`: the only module that parses arguments. Each sub-command
builds a config and calls its step's run_<step>; nothing else happens here."""

import argparse
import sys

from .config import AttackConfig, DataConfig, DefendConfig, MainConfig, PoisonConfig, TrainConfig

DATA = DataConfig()
TRAIN = TrainConfig()
ATTACK = AttackConfig()
MAIN = MainConfig()
DEFEND = DefendConfig()


def _none_or(kind):
    def parse(text):
        return None if text in ("", "none", "None") else kind(text)
    return parse


def _bool(text):
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _fractions(text):
    parts = text.split(",")
    if len(parts) != 3:
        raise argparse.ArgumentTypeError(f"expected three comma-separated fractions (train,val,test), got {text!r}")
    try:
        return tuple(float(p) for p in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers, got {text!r}") from None


def _add_data_args(p):
    g = p.add_argument_group("data")
    g.add_argument("--data", type=_none_or(str), default=DATA.path,
                   help="HAM10000 or ISIC 2018 folder, or dermamnist*.npz (default: $MEDROBUST_DATA, else download DermaMNIST)")
    g.add_argument("--image-size", type=int, default=DATA.image_size, help="square input size in pixels")
    g.add_argument("--fractions", type=_fractions, default=DATA.fractions, help="train,val,test fractions")
    g.add_argument("--per-class-limit", type=_none_or(int), default=DATA.per_class_limit,
                   help="keep about this many images per class (whole lesions); default all")
    g.add_argument("--health-map", choices=("clinical", "thesis"), default=DATA.health_map)
    g.add_argument("--cache-dir", type=_none_or(str), default=DATA.cache_dir,
                   help="decoded-image cache (default $MEDROBUST_CACHE or ~/.cache/medrobust)")
    g.add_argument("--seed", type=int, default=DATA.seed, help="seed for the split, subset and training")


def _add_train_args(p):
    g = p.add_argument_group("training")
    g.add_argument("--arch", default=TRAIN.arch, help="small_cnn | resnet50 | inception_v3")
    g.add_argument("--weights", default=TRAIN.weights, help="none, or the path of a local ImageNet weights file")
    g.add_argument("--epochs", type=int, default=TRAIN.epochs)
    g.add_argument("--batch-size", type=int, default=TRAIN.batch_size)
    g.add_argument("--learning-rate", type=float, default=TRAIN.learning_rate)
    g.add_argument("--patience", type=int, default=TRAIN.patience, help="early-stopping patience (epochs)")
    g.add_argument("--class-weight", choices=("balanced", "sqrt", "none"), default=TRAIN.class_weight)
    g.add_argument("--augment", type=_bool, default=TRAIN.augment)
    g.add_argument("--head-epochs", type=int, default=TRAIN.head_epochs)
    g.add_argument("--experiment", default=TRAIN.experiment, help="MLflow experiment name")
    g.add_argument("--run-name", type=_none_or(str), default=TRAIN.run_name)
    g.add_argument("--register", type=_bool, default=TRAIN.register, help="register the model version")


def _data_config(a):
    return DataConfig(path=a.data, image_size=a.image_size, fractions=a.fractions, seed=a.seed,
                      per_class_limit=a.per_class_limit, health_map=a.health_map, cache_dir=a.cache_dir)


def _train_config(a):
    return TrainConfig(data=_data_config(a), arch=a.arch, weights=a.weights, epochs=a.epochs, batch_size=a.batch_size,
                       learning_rate=a.learning_rate, patience=a.patience, class_weight=a.class_weight,
                       augment=a.augment, head_epochs=a.head_epochs, seed=a.seed, experiment=a.experiment,
                       run_name=a.run_name, register=a.register)


def _add_attack_args(p):
    g = p.add_argument_group("attack")
    g.add_argument("--model-uri", required=True, help="runs:/<id>/model or models:/<name>@<alias>")
    g.add_argument("--method", default=ATTACK.method, help="fgsm | pgd | cw | deepfool | uap | uap_fast")
    g.add_argument("--eps", type=float, default=ATTACK.eps, help="budget on [0, 1] images (default 2/255)")
    g.add_argument("--norm", default=ATTACK.norm, help="inf | 2")
    g.add_argument("--target", type=_none_or(str), default=ATTACK.target, help="class to push every image to")
    g.add_argument("--attack-model-uri", type=_none_or(str), default=ATTACK.attack_model_uri,
                   help="surrogate model for a transfer attack (default: the target, white-box)")
    g.add_argument("--split", choices=("train", "val", "test"), default=ATTACK.split)
    g.add_argument("--max-images", type=_none_or(int), default=ATTACK.max_images)
    g.add_argument("--steps", type=int, default=ATTACK.steps)
    g.add_argument("--step-size", type=_none_or(float), default=ATTACK.step_size)
    g.add_argument("--random-start", type=_bool, default=ATTACK.random_start)
    g.add_argument("--uap-attacker", default=ATTACK.uap_attacker)
    g.add_argument("--uap-delta", type=float, default=ATTACK.uap_delta)
    g.add_argument("--uap-max-iter", type=int, default=ATTACK.uap_max_iter)
    g.add_argument("--max-steps", type=int, default=ATTACK.max_steps)
    g.add_argument("--target-fooling-rate", type=float, default=ATTACK.target_fooling_rate)
    g.add_argument("--batch-size", type=int, default=ATTACK.batch_size)
    g.add_argument("--experiment", default=ATTACK.experiment)
    g.add_argument("--run-name", type=_none_or(str), default=ATTACK.run_name)


def _attack_config(a):
    return AttackConfig(
        model_uri=a.model_uri, data=_data_config(a), method=a.method, eps=a.eps, norm=a.norm, target=a.target,
        attack_model_uri=a.attack_model_uri, split=a.split, max_images=a.max_images, steps=a.steps,
        step_size=a.step_size, random_start=a.random_start, uap_attacker=a.uap_attacker, uap_delta=a.uap_delta,
        uap_max_iter=a.uap_max_iter, max_steps=a.max_steps, target_fooling_rate=a.target_fooling_rate,
        batch_size=a.batch_size, seed=a.seed, experiment=a.experiment, run_name=a.run_name,
    )


def _fraction_list(text):
    try:
        return tuple(float(p) for p in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated fractions, got {text!r}") from None


def _name_list(text):
    return tuple(p.strip() for p in text.split(",") if p.strip())


def _add_defend_args(p):
    g = p.add_argument_group("defense")
    g.add_argument("--model-uri", required=True, help="the undefended model: runs:/<id>/model or models:/<name>@<alias>")
    g.add_argument("--defense", default=DEFEND.defense,
                   help="distill | retrain | detector | squeeze | smooth | jpeg | llt, joined by '+' (e.g. retrain+llt)")
    g.add_argument("--rounds", type=int, default=DEFEND.rounds, help="retrain: rounds of fresh adversarial examples")
    g.add_argument("--ratio", type=float, default=DEFEND.ratio, help="retrain: share of the images perturbed per round")
    g.add_argument("--epochs-per-round", type=int, default=DEFEND.epochs_per_round)
    g.add_argument("--retrain-attacks", type=_name_list, default=DEFEND.retrain_attacks,
                   help="retrain: attack(s), comma-separated (fgsm, pgd, uap, uap_fast)")
    g.add_argument("--retrain-eps", type=float, default=DEFEND.retrain_eps)
    g.add_argument("--retrain-on", choices=("train", "train+val"), default=DEFEND.retrain_on)
    g.add_argument("--on-the-fly", type=_bool, default=DEFEND.on_the_fly,
                   help="retrain Madry-style: fresh perturbations every batch")
    g.add_argument("--learning-rate", type=float, default=DEFEND.learning_rate)
    g.add_argument("--batch-size", type=int, default=DEFEND.batch_size)
    g.add_argument("--llt-quality", type=int, default=DEFEND.llt_quality, help="llt: WebP quality 1..100")
    g.add_argument("--jpeg-quality", type=int, default=DEFEND.jpeg_quality)
    g.add_argument("--smooth-window", type=int, default=DEFEND.smooth_window)
    g.add_argument("--squeeze-bits", type=int, default=DEFEND.squeeze_bits)
    g.add_argument("--temperature", type=float, default=DEFEND.temperature, help="distill: temperature")
    g.add_argument("--distill-epochs", type=int, default=DEFEND.distill_epochs)
    g.add_argument("--detector-attacks", type=_name_list, default=DEFEND.detector_attacks)
    g.add_argument("--detector-eps", type=float, default=DEFEND.detector_eps)
    g.add_argument("--detector-epochs", type=int, default=DEFEND.detector_epochs)
    g.add_argument("--detector-threshold", type=float, default=DEFEND.detector_threshold)
    g.add_argument("--eval-attacks", type=_name_list, default=DEFEND.eval_attacks,
                   help="attacks measured at once, transfer and white-box")
    g.add_argument("--eval-eps", type=float, default=DEFEND.eval_eps)
    g.add_argument("--uap-max-steps", type=int, default=DEFEND.uap_max_steps)
    g.add_argument("--max-images", type=_none_or(int), default=DEFEND.max_images)
    g.add_argument("--experiment", default=DEFEND.experiment)
    g.add_argument("--run-name", type=_none_or(str), default=DEFEND.run_name)
    g.add_argument("--register", type=_bool, default=DEFEND.register)
    g.add_argument("--alias", default=DEFEND.alias, help="registry alias of the defended version")


def _defend_config(a):
    return DefendConfig(
        model_uri=a.model_uri, data=_data_config(a), defense=a.defense, rounds=a.rounds, ratio=a.ratio,
        epochs_per_round=a.epochs_per_round, retrain_attacks=a.retrain_attacks, retrain_eps=a.retrain_eps,
        retrain_on=a.retrain_on, on_the_fly=a.on_the_fly, learning_rate=a.learning_rate, batch_size=a.batch_size,
        llt_quality=a.llt_quality, jpeg_quality=a.jpeg_quality, smooth_window=a.smooth_window,
        squeeze_bits=a.squeeze_bits, temperature=a.temperature, distill_epochs=a.distill_epochs,
        detector_attacks=a.detector_attacks, detector_eps=a.detector_eps, detector_epochs=a.detector_epochs,
        detector_threshold=a.detector_threshold, eval_attacks=a.eval_attacks, eval_eps=a.eval_eps,
        uap_max_steps=a.uap_max_steps, max_images=a.max_images, seed=a.seed, experiment=a.experiment,
        run_name=a.run_name, register=a.register, alias=a.alias,
    )


def build_parser():
    parser = argparse.ArgumentParser(prog="medrobust", description="Attack and defend medical image classifiers, tracked in MLflow.")
    sub = parser.add_subparsers(dest="step", required=True)
    text = "train a classifier and register it"
    p = sub.add_parser("train", help=text, description=text)
    _add_data_args(p)
    _add_train_args(p)
    text = "the main job: train the baseline, attack it, print clean against attacked metrics"
    p = sub.add_parser("main", help=text, description=text)
    _add_data_args(p)
    _add_train_args(p)
    g = p.add_argument_group("attacks")
    g.add_argument("--attacks", type=_name_list, default=MAIN.attacks, help="comma-separated attack methods")
    g.add_argument("--eps", type=float, default=MAIN.eps, help="budget of every attack (default 2/255)")
    g.add_argument("--uap-max-steps", type=int, default=MAIN.uap_max_steps, help="uap_fast's step limit")
    g.add_argument("--defense", default=MAIN.defense, help="defense to build and measure after the attacks; none: skip")
    g.add_argument("--rounds", type=int, default=MAIN.rounds, help="retrain rounds")
    g.add_argument("--epochs-per-round", type=int, default=MAIN.epochs_per_round)
    p = sub.add_parser("poison", help="train on labels flipped from a source to a target class")
    _add_data_args(p)
    _add_train_args(p)
    g = p.add_argument_group("poisoning")
    g.add_argument("--source", default=PoisonConfig.source, help="class whose labels are flipped")
    g.add_argument("--target", default=PoisonConfig.target, help="class they are flipped to")
    g.add_argument("--poison-fractions", type=_fraction_list, default=PoisonConfig.fractions, dest="poison_fractions",
                   help="fractions of the source's training images, e.g. 0.05,0.1,0.2 (several: a sweep)")
    p = sub.add_parser("attack", help="attack a model and log clean and attacked metrics")
    _add_data_args(p)
    _add_attack_args(p)
    p = sub.add_parser("defend", help="defend a model, register the defended model and measure it")
    _add_data_args(p)
    _add_defend_args(p)
    p = sub.add_parser("predict", help="class probabilities and the health call for image files, as CSV")
    p.add_argument("--model-uri", required=True, help="runs:/<id>/model or models:/<name>@<alias> (defended or not)")
    p.add_argument("inputs", nargs="+", help="image files or folders")
    p.add_argument("--output", default="-", help="CSV file to write (default: standard output)")
    p.add_argument("--health-map", choices=("clinical", "thesis"), default=DATA.health_map)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        if args.step == "attack":
            from .steps.attack import run_attack

            result = run_attack(_attack_config(args))
            m = result.metrics
            print(f"run {result.run_id}  accuracy {m['clean_accuracy']:.3f} -> {m['adv_accuracy']:.3f}  "
                  f"fnr {m['clean_fnr']:.3f} -> {m['adv_fnr']:.3f}  fooling rate {m['fooling_rate']:.3f}")
            return 0
        if args.step == "defend":
            from .steps.defend import run_defend
            from .steps.report import format_table

            result = run_defend(_defend_config(args))
            print(format_table(result.table))
            print(f"run {result.run_id}  defended model {result.model_uri}"
                  + (f"  registered {result.registered_name} v{result.version} @{args.alias}" if result.version else ""))
            return 0
        if args.step == "predict":
            from . import tracking
            from .predict import predict_files

            frame = predict_files(tracking.load_classifier(args.model_uri), args.inputs, args.health_map)
            frame.to_csv(sys.stdout if args.output == "-" else args.output, index=False)
            return 0
        config = _train_config(args)
        if args.step == "poison":
            from .steps.poison import run_poison

            result = run_poison(PoisonConfig(train=config, source=args.source, target=args.target,
                                             fractions=args.poison_fractions))
            for fraction, r in result.runs.items():
                print(f"fraction {fraction:.2f}: run {r.run_id}  accuracy {r.metrics['clean_accuracy']:.3f}  "
                      f"macro recall {r.metrics['clean_macro_recall']:.3f}  fnr {r.metrics['clean_fnr']:.3f}")
        if args.step == "train":
            from .steps.train import run_train

            result = run_train(config)
            print(f"run {result.run_id}  model {result.model_uri}  "
                  f"accuracy {result.metrics['clean_accuracy']:.3f}  macro recall {result.metrics['clean_macro_recall']:.3f}")
        elif args.step == "main":
            from .steps.main import run_main

            run_main(MainConfig(train=config, attacks=args.attacks, eps=args.eps, uap_max_steps=args.uap_max_steps,
                                defense=args.defense, rounds=args.rounds, epochs_per_round=args.epochs_per_round))
    except (ValueError, OSError) as e:
        # Bad input: one clear line naming the file, row or parameter, not a traceback.
        print(f"medrobust {args.step}: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
