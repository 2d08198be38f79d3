"""A learning rate on the device for capturable steps (docs/semantics.md#capturable-steps).

With ``capturable=True`` and ``lr`` a one-element float32/float64 CUDA tensor on the group's
device, the kernels read the learning rate from that tensor (StepConfig::lr) instead of
receiving it from the host: step() reads nothing back, so it can be captured in a
``torch.cuda.CUDAGraph``, and writing a new value into the tensor (``lr.fill_(x)``, as the
schedulers do) changes what every later replay uses, as with torch's capturable Adam.
Everything else about the group's options still comes from the host (fixed in a captured
graph); the rule's math is the same, only where its lr comes from differs.
"""

from .. import _interop

# The dtypes a device lr may have (the kernels widen float32 to float64, as the host does).
_LR_DTYPES = ("float32", "float64")


def uses_device_lr(optimizer, group):
    """Whether this group's steps read lr on the device: capturable, a torch CUDA tensor lr, and
    a rule whose kernels can take it (the element-wise rules)."""
    return bool(group.get("capturable")) and optimizer._device_lr and _interop.is_cuda(group.get("lr"))


def _dtype_name(lr):
    """The lr's dtype as "float32", "float64", ... (torch's and CuPy's dtypes alike)."""
    return str(lr.dtype).rpartition(".")[2]


def check(optimizer, group, group_index, device):
    """Validate the lr of a group about to be stepped, before anything changes. `device`: the
    group's CUDA device (None for CPU groups)."""
    lr = group.get("lr")
    if not _interop.is_cuda(lr):
        return
    where = f"param group {group_index}"
    if uses_device_lr(optimizer, group):
        if lr.numel() != 1:
            raise ValueError(f"Tensor lr must be 1-element (lr of {where} has {lr.numel()} elements)")
        if _dtype_name(lr) not in _LR_DTYPES:
            raise TypeError(
                f"capturable=True reads lr on the device as float32 or float64; lr of {where} is {lr.dtype}"
            )
        if device is not None and lr.device != device:
            raise ValueError(
                f"capturable=True: lr of {where} is on {lr.device}, but its parameters are on {device}; "
                "keep the lr tensor on the parameters' device"
            )
        return
    # Read on the host: a device-to-host copy, which a stream being captured refuses with a CUDA
    # error part-way through the step. Say so before anything changes.
    torch = _interop.torch_module()
    if torch.cuda.is_current_stream_capturing():
        why = (
            "its rule takes lr from the host"
            if group.get("capturable")
            else "capturable is not set (capturable=True, given to the optimizer or set in the param group, reads it on the device)"
        )
        raise RuntimeError(
            f"a CUDA tensor lr of {where} is read on the host, which cannot happen while a CUDA graph "
            f"is being captured: {why}; capture with a float lr (fixed in the graph) or keep lr on the CPU"
        )


def control(group, cached):
    """The _C.StepControl keywords of a device lr; the tensor is kept in the plan until the next
    step so that the launches never read freed memory."""
    lr = group["lr"]
    cached.lr = lr
    return {"lr_ptr": lr.data_ptr(), "lr_is_double": _dtype_name(lr) == "float64"}
