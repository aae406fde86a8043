"""Stage evaluate@<arch>-<init>: the training history stored in the model file, as
plots/history/<arch>-<init>.csv; every test-set metric of the checkpoint that train chose
on validation, with 95 % intervals (patients resampled), the test sensitivity and
specificity at the referable operating points chosen on validation, and the split's
patient leakage; the per-image predictions for DVC's confusion plot; a confusion
heatmap; a Grad-CAM gallery of right and wrong test photos per grade.

With evaluate.pair_eyes, each eye is also graded from both eyes' outputs (a model
fitted on validation; a leaky split is refused before any work), reported beside.
Cut-points, operating points and the two-eye model are fitted on validation outputs
made as the test outputs are: with evaluate.tta: flips, flip-averaged ones too.

Reads params.yaml: evaluate.batch_size, evaluate.tta (none | flips),
evaluate.pair_eyes (true | false), compute.device (auto | cpu | cuda) and
compute.loader_workers.
"""

import argparse

import torch

from retino.atomic import write_json, write_text
from retino.params import check_arch, check_init, load_params, run_name
from retino.progress import console
from retino.grading import LearnedNothing, learned_nothing_text, predicted_grades
from retino.report.evaluation import (broken_outputs_warning, history_csv, model_report,
                                      patient_leakage_percent, predict_test_split,
                                      predict_validation_split, prediction_rows)
from retino.report.pairing import paired_eyes_report, refuse_leaky_split
from retino.report.figures import confusion_heatmap
from retino.report.gallery import gallery
from retino.stage import run_stage, stage_parser


def parse_args() -> argparse.Namespace:
    return stage_parser(__doc__, per_run=True, paths={
        "--model": "the train stage's .pt", "--metrics-out": "metrics JSON to write",
        "--history-out": "per-epoch history CSV to write (from the model file)",
        "--predictions-out": "per-image rows to write",
        "--figure-out": "confusion heatmap to write", "--gallery-out": "Grad-CAM gallery to write",
    }).parse_args()


def main() -> None:
    args = parse_args()
    name = run_name(check_arch(args.arch), check_init(args.init))
    params = load_params(stage="evaluate")
    leakage = patient_leakage_percent(args.data)
    if params.evaluate.pair_eyes:
        refuse_leaky_split(leakage)  # before any work
    settings = (params.evaluate.batch_size, params.compute.loader_workers, params.evaluate.tta)
    test = predict_test_split(args.model, args.data, params.compute.device, *settings)
    checkpoint, names = test.checkpoint, test.images.names
    history = history_csv(checkpoint, args.model)
    validation = predict_validation_split(test, args.model, args.data, *settings)
    broken = broken_outputs_warning(args.model, test.logits, "test images")
    if broken:
        console.print(broken)
    report = model_report(test, validation, leakage, params.evaluate.tta)
    cuts = report["cuts"]
    predicted = predicted_grades(test.logits, cuts)
    if params.evaluate.pair_eyes:
        report["paired_eyes"] = paired_eyes_report(validation, test.actual, test.logits, names)
    write_text(args.history_out, history)
    write_json(args.metrics_out, report)
    write_json(args.predictions_out, prediction_rows(test.actual, predicted))
    headline = f"test accuracy {report['acc']:.1f} %, QWK {report['qwk']:.3f}"
    confusion_heatmap(report["confusion_counts"], f"{name}: {headline}", args.figure_out)
    gallery(test.model, test.images, test.to_model, predicted,
            f"{name}: Grad-CAM on test photos ({headline})", args.gallery_out)
    console.print(f"[bold]{name}[/]: accuracy {report['acc']:.1f} % (majority baseline "
                  f"{report['baseline_acc']:.1f} %), QWK {report['qwk']:.3f}, balanced "
                  f"accuracy {report['bacc']:.1f} %, referable sensitivity "
                  f"{report['ref_sens']:.1f} % / specificity {report['ref_spec']:.1f} %")
    if report["learned_nothing"]:
        verdict = LearnedNothing(**report["learned_nothing"])
        said = learned_nothing_text(name, verdict, weighted_loss=report["weighted_loss"])
        console.print(f"[bold yellow]warning:[/] {said}", soft_wrap=True)


if __name__ == "__main__":
    torch.set_grad_enabled(False)  # Grad-CAM turns gradients on where it needs them
    run_stage(main)
