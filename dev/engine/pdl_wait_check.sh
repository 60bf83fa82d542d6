#!/usr/bin/env bash
# GPU: the attention / producer tests, then the PDL ordering test against a copy of the source
# whose fused split kernel does not wait (griddepcontrol.wait removed): that run must FAIL,
# which shows test_fused_waits_for_a_pdl_predecessor can see a missing wait.
#   bash dev/engine/pdl_wait_check.sh      (from the repository root, on a GPU machine)
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1
timeout 200 python3 -m pytest tests/engine/test_gpu_attention.py tests/engine/test_gpu_act_quant.py -q -p no:cacheprovider 2>&1 | tail -2
# the test must fail if the split kernel did not wait: a copy of src without that wait
rm -rf /tmp/broken && cp -r src /tmp/broken
grep -c "pdl_wait(PDL)  # q/k/v" /tmp/broken/resetfp4/engine/attention_kernels.py
sed -i '/pdl_wait(PDL)  # q\/k\/v/d' /tmp/broken/resetfp4/engine/attention_kernels.py
grep -c "pdl_wait(PDL)  # q/k/v" /tmp/broken/resetfp4/engine/attention_kernels.py
PYTHONPATH=/tmp/broken timeout 200 python3 -m pytest tests/engine/test_gpu_attention.py -k pdl_predecessor -q -p no:cacheprovider 2>&1 | tail -4
