"""Stage evaluate@<arch>-<init>: test-set metrics of the validation-chosen checkpoint."""

import argparse
from pathlib import Path

import torch

from retino.atomic import write_json
from retino.params import check_arch, check_init, load_params, run_name
from retino.progress import console
from retino.report.evaluation import evaluation_report, predict_test_split, prediction_rows
from retino.report.figures import confusion_heatmap
from retino.stage import run_stage


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--arch", required=True)
    parser.add_argument("--init", required=True)
    parser.add_argument("--data", type=Path, required=True, help="downscaled set")
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--metrics-out", type=Path, required=True)
    parser.add_argument("--predictions-out", type=Path, required=True)
    parser.add_argument("--figure-out", type=Path, required=True)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    name = run_name(check_arch(args.arch), check_init(args.init))
    params = load_params()
    test = predict_test_split(args.model, args.data, params.compute.device,
                              params.evaluate.batch_size, params.compute.loader_workers)
    checkpoint = test.checkpoint
    report = {"chosen_epoch": checkpoint["epoch"], "chosen_phase": checkpoint["phase"],
              "weighted_loss": checkpoint["weighted_loss"],
              **evaluation_report(test.actual, test.logits)}
    write_json(args.metrics_out, report)
    write_json(args.predictions_out, prediction_rows(test.actual, test.logits.argmax(axis=1)))
    confusion_heatmap(report["confusion_counts"],
                      f"{name}: test accuracy {report['accuracy']:.1f} %, "
                      f"kappa {report['quadratic_weighted_kappa']:.3f}", args.figure_out)
    console.print(f"[bold]{name}[/]: accuracy {report['accuracy']:.1f} % (majority baseline "
                  f"{report['majority_baseline_accuracy']:.1f} %), kappa "
                  f"{report['quadratic_weighted_kappa']:.3f}, referable sensitivity "
                  f"{report['referable']['sensitivity']:.3f} / specificity "
                  f"{report['referable']['specificity']:.3f}")


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    run_stage(main)
