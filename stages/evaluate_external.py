"""Stage evaluate-external@<arch>-<init>-<source>: the model that train chose, scored on
the external set downscale-external made of external.source, with evaluate's code: the
same metrics, 95 % intervals (patients resampled where the names say them, else
images), the cut-points and referable operating points fitted on the model's own
validation split (never on the external set), and, with evaluate.pair_eyes, the
two-eye figures where the external set pairs the eyes. Photos of the external set
that are photos of the training data (the same name, or the same fingerprint:
retino.data.fingerprints) are left out of every figure, counted and listed. Writes
metrics/external/<source>/<arch>-<init>.json; compare sets it beside the in-domain
figures.

Reads params.yaml: external.split (all | test: recorded in the report), data.source
(names are compared with the training data's unless one side is the synthetic set,
whose names are invented), evaluate.batch_size, evaluate.tta (none | flips),
evaluate.pair_eyes (true | false), compute.device (auto | cpu | cuda) and
compute.loader_workers.
"""

import argparse

import torch

from retino.atomic import write_json
from retino.params import SOURCES, check_arch, check_init, load_params, run_name
from retino.progress import console
from retino.grading import LearnedNothing, learned_nothing_text
from retino.report.comparison import shared_training_text
from retino.report.evaluation import (broken_outputs_warning, predict_test_split,
                                      predict_validation_split)
from retino.report.external import (external_report, names_mean_something,
                                    photos_of_training, shared_report)
from retino.stage import run_stage, stage_parser


def parse_args() -> argparse.Namespace:
    parser = stage_parser(__doc__, per_run=True, paths={
        "--external": "the downscaled external set (data/external/<source>)",
        "--model": "the train stage's .pt", "--metrics-out": "metrics JSON to write"})
    parser.add_argument("--source", required=True, choices=SOURCES, help="the external set")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    name = run_name(check_arch(args.arch), check_init(args.init))
    params = load_params(stage="evaluate-external")
    compare_names = names_mean_something(params.data.source, args.source)
    shared, keep, images = photos_of_training(args.external, args.data, compare_names,
                                              args.source)
    settings = (params.evaluate.batch_size, params.compute.loader_workers, params.evaluate.tta)
    test = predict_test_split(args.model, args.external, params.compute.device, *settings,
                              keep=keep)
    validation = predict_validation_split(test, args.model, args.data, *settings)
    broken = broken_outputs_warning(args.model, test.logits, f"images of {args.source}")
    if broken:
        console.print(broken)
    report = external_report(test, validation, params.evaluate.tta, args.source,
                             params.external.split, params.evaluate.pair_eyes)
    report["shared_with_training"] = shared_report(shared, images, compare_names)
    write_json(args.metrics_out, report)
    console.print(f"[{'yellow' if shared else 'default'}]{shared_training_text(report)}[/]",
                  soft_wrap=True)
    console.print(f"[bold]{name}[/] on {args.source} ({report['test_images']} images): QWK "
                  f"{report['qwk']:.3f}, accuracy {report['acc']:.1f} % (majority baseline "
                  f"{report['baseline_acc']:.1f} %), referable sensitivity "
                  f"{report['ref_sens']:.1f} % / specificity {report['ref_spec']:.1f} %")
    if report["learned_nothing"]:
        said = learned_nothing_text(name, LearnedNothing(**report["learned_nothing"]),
                                    f"predictions on {args.source}", report["weighted_loss"])
        console.print(f"[bold yellow]warning:[/] On {args.source}: {said}", soft_wrap=True)


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    run_stage(main)
