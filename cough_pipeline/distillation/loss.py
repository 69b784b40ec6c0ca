"""The self-distillation loss of a student against a frozen teacher's logits."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def distillation_loss(
    student_logits: torch.Tensor,
    labels: torch.Tensor,
    teacher_logits: torch.Tensor,
    alpha: float,
    temperature: float,
) -> torch.Tensor:
    """``α·CE(y_s, y) + (1−α)·T²·KL(softmax(y_t/T) ‖ softmax(y_s/T))``, averaged over the batch.

    Args:
        student_logits: (batch, classes), the student's final logits.
        labels: (batch,), class indices.
        teacher_logits: (batch, classes), the frozen teacher's final logits; no gradient flows into them.
        alpha: weight of the hard-label cross-entropy, in [0, 1].
        temperature: softening temperature T > 0; the T² factor keeps the soft term's gradients on the hard
            term's scale as T changes.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f"student logits {tuple(student_logits.shape)} and teacher logits "
            f"{tuple(teacher_logits.shape)} differ in shape"
        )
    hard = F.cross_entropy(student_logits, labels)
    soft_teacher = F.log_softmax(teacher_logits.detach() / temperature, dim=-1)
    soft_student = F.log_softmax(student_logits / temperature, dim=-1)
    # KL(p_t ‖ p_s) = Σ p_t (log p_t − log p_s), per example, then the batch mean
    kl = F.kl_div(soft_student, soft_teacher, reduction="batchmean", log_target=True)
    return alpha * hard + (1.0 - alpha) * temperature**2 * kl
