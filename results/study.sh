#!/usr/bin/env bash
# The multi-seed study behind results/SUMMARY.md. Resumable: rerun the same command after
# an interruption and finished runs are skipped, interrupted ones resume from checkpoints.
#
#   bash results/study.sh OUTPUT_DIR [JOBS] [PART...]
#
# PART is any of: core controls variants sensitivity cola (default: all, in that order).
# JOBS runs in parallel per sweep (1 on a 2-core CPU; ~3 on one GPU, with several parts at once).
set -uo pipefail
out=${1:?usage: study.sh OUTPUT_DIR [JOBS] [PART...]}
jobs=${2:-1}
shift $(( $# >= 2 ? 2 : 1 ))
parts=${*:-core controls variants sensitivity cola}
P2=params/twitter_to_uci.yaml
sweep() { python -m siftkit sweep --output-dir "$out" --jobs "$jobs" "$@" || status=1; }
status=0
for part in $parts; do
  case $part in
    core)      # P2 at the seed paper's settings, 5 seeds each
      sweep --params $P2 --algos plain,smart,sift --seeds 1-5 ;;
    controls)  # what the seed paper's code ran (no Bregman), and SMART with R weighted 0:
               # the same random numbers drawn as SMART, no regularization — the RNG control
      sweep --params $P2 --algos smart --seeds 1-5 --tag no_bregman --bregman_weight 0
      sweep --params $P2 --algos smart --seeds 1-5 --tag rng_control --adv_weight 0 --bregman_weight 0 ;;
    variants)  # where the perturbation lives
      sweep --params $P2 --algos sift,smart --seeds 1-5 --tag word_embeddings --perturb_at word_embeddings
      sweep --params $P2 --algos sift --seeds 1-5 --tag pre_layernorm --perturb_at pre_layernorm ;;
    sensitivity)  # adv_weight in {1, 10} x perturbation scale in {default, 10x}, 3 seeds
                  # (weight 1 at the default scale is the core runs)
      sweep --params $P2 --algos smart,sift --seeds 1-3 --tag w10 --adv_weight 10
      sweep --params $P2 --algos smart --seeds 1-3 --tag scale10 --adv_epsilon 1e-4 --adv_noise_std 1e-4 --adv_step_size 1e-2
      sweep --params $P2 --algos smart --seeds 1-3 --tag w10_scale10 --adv_weight 10 --adv_epsilon 1e-4 --adv_noise_std 1e-4 --adv_step_size 1e-2
      sweep --params $P2 --algos sift --seeds 1-3 --tag scale10 --adv_epsilon 1e-1 --adv_noise_std 1e-1 --adv_step_size 1e-2
      sweep --params $P2 --algos sift --seeds 1-3 --tag w10_scale10 --adv_weight 10 --adv_epsilon 1e-1 --adv_noise_std 1e-1 --adv_step_size 1e-2 ;;
    cola)      # P1, 3 seeds each
      sweep --params params/cola.yaml --algos plain,smart,sift --seeds 1-3 ;;
    *) echo "unknown part $part" >&2; exit 2 ;;
  esac
done
exit $status
