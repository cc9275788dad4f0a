"""Golden values of models/tests/darts.rs: DARTS's networks re-written in
PyTorch from the paper and its operations (affine batch norms everywhere, as
kdprune's).

    python3 scripts/python/darts_reference.py                     # sizes
    python3 scripts/python/darts_reference.py STATE.safetensors   # training step

STATE.safetensors: the test's search network (`DartsNetwork::search` with
C = 4, 3 cells, 1x8x8, seed 4, the alphas set as the test sets them), its
`Network::state()` with `xs` and `ys` added, saved by a throwaway Rust test
with `candle_core::safetensors::save`. Needs torch and safetensors (pip);
never part of the build or the tests.
"""
import sys
import torch, torch.nn as nn
PRIMS = ['none','skip_connect','sep_conv_3x3','sep_conv_5x5','dil_conv_3x3','dil_conv_5x5','avg_pool_3x3','max_pool_3x3']
class Zero(nn.Module):
    def __init__(s, stride): super().__init__(); s.stride = stride
    def forward(s, x): return x[:, :, ::s.stride, ::s.stride].mul(0.)
class FR(nn.Module):
    def __init__(s, ci, co):
        super().__init__(); s.c1 = nn.Conv2d(ci, co//2, 1, 2, bias=False); s.c2 = nn.Conv2d(ci, co - co//2, 1, 2, bias=False); s.bn = nn.BatchNorm2d(co)
    def forward(s, x):
        x = torch.relu(x); return s.bn(torch.cat([s.c1(x), s.c2(x[:, :, 1:, 1:])], 1))
def rcb(ci, co): return nn.Sequential(nn.ReLU(), nn.Conv2d(ci, co, 1, bias=False), nn.BatchNorm2d(co))
def dwpw(ci, co, k, s, d): return nn.Sequential(nn.ReLU(), nn.Conv2d(ci, ci, k, s, d*(k-1)//2, dilation=d, groups=ci, bias=False), nn.Conv2d(ci, co, 1, bias=False), nn.BatchNorm2d(co))
class Avg(nn.Module):
    def __init__(s, st): super().__init__(); s.p = nn.AvgPool2d(3, st, 1, count_include_pad=False)
    def forward(s, x): return s.p(x)
def op(name, c, s, pool_bn):
    if name == 'none': return Zero(s)
    if name == 'skip_connect': return nn.Identity() if s == 1 else FR(c, c)
    if name.startswith('sep'): k = int(name[-1]); return nn.Sequential(dwpw(c, c, k, s, 1), dwpw(c, c, k, 1, 1))
    if name.startswith('dil'): k = int(name[-1]); return dwpw(c, c, k, s, 2)
    p = Avg(s) if name.startswith('avg') else nn.MaxPool2d(3, s, 1)
    return nn.Sequential(p, nn.BatchNorm2d(c)) if pool_bn else p
class Cell(nn.Module):
    def __init__(s, cpp, cp, c, red, red_prev, geno):
        super().__init__()
        s.pre0 = FR(cpp, c) if red_prev else rcb(cpp, c); s.pre1 = rcb(cp, c)
        s.edges = nn.ModuleList(); s.spec = []
        for node in range(4):
            for j in range(node + 2):
                st = 2 if red and j < 2 else 1
                if geno is None:
                    s.edges.append(nn.ModuleList([op(p, c, st, True) for p in PRIMS])); s.spec.append((node, j))
                else:
                    for (p, f) in geno[2*node:2*node+2]:
                        if f == j: s.edges.append(nn.ModuleList([op(p, c, st, False)])); s.spec.append((node, j))
    def forward(s, s0, s1):
        st = [s.pre0(s0), s.pre1(s1)]
        for node in range(4):
            st.append(sum(o(st[j]) for (n, j), e in zip(s.spec, s.edges) if n == node for o in e))
        return torch.cat(st[2:], 1)
class Net(nn.Module):
    def __init__(s, cin, C, classes, layers, geno=None):
        super().__init__()
        s.stem = nn.Sequential(nn.Conv2d(cin, 3*C, 3, 1, 1, bias=False), nn.BatchNorm2d(3*C))
        cpp, cp, c = 3*C, 3*C, C; rp = False; s.cells = nn.ModuleList()
        for i in range(layers):
            red = i in (layers//3, 2*layers//3)
            if red: c *= 2
            g = None if geno is None else (geno[1] if red else geno[0])
            s.cells.append(Cell(cpp, cp, c, red, rp, g)); rp = red; cpp, cp = cp, 4*c
        s.fc = nn.Linear(cp, classes)
    def forward(s, x):
        s0 = s1 = s.stem(x)
        for c in s.cells: s0, s1 = s1, c(s0, s1)
        return s.fc(s1.mean((2, 3)))
def macs(m, x):
    total = [0]
    def hook(mod, inp, out):
        if isinstance(mod, nn.Conv2d): total[0] += out.numel() // out.shape[0] * (mod.in_channels // mod.groups) * mod.kernel_size[0] * mod.kernel_size[1]
        elif isinstance(mod, nn.Linear): total[0] += mod.in_features * mod.out_features
    hs = [mm.register_forward_hook(hook) for mm in m.modules() if isinstance(mm, (nn.Conv2d, nn.Linear))]
    m.eval(); m(x); [h.remove() for h in hs]; return total[0]
n = lambda m: sum(p.numel() for p in m.parameters())
V2 = ([('sep_conv_3x3',0),('sep_conv_3x3',1),('sep_conv_3x3',0),('sep_conv_3x3',1),('sep_conv_3x3',1),('skip_connect',0),('skip_connect',0),('dil_conv_3x3',2)],
      [('max_pool_3x3',0),('max_pool_3x3',1),('skip_connect',2),('max_pool_3x3',1),('max_pool_3x3',0),('skip_connect',2),('skip_connect',2),('max_pool_3x3',1)])
if len(sys.argv) == 1:
    m = Net(3, 36, 10, 20, V2); print('darts-v2 C36 L20', n(m), macs(m, torch.zeros(1,3,32,32)))
    m = Net(1, 16, 10, 8); print('search C16 L8 1x28x28', n(m), macs(m, torch.zeros(1,1,28,28)))
    m = Net(1, 8, 10, 5); print('search C8 L5 1x28x28', n(m), macs(m, torch.zeros(1,1,28,28)))
else:
    from safetensors.torch import load_file
    import torch.nn.functional as F
    t = load_file(sys.argv[1])
    m = Net(1, 4, 10, 3)
    def tv(name):
        p = name.split('.')
        if p[0] == 'stem': return 'stem.0.' + p[1]
        if p[0] == 'stem_bn': return 'stem.1.' + '.'.join(p[1:])
        if p[0] == 'fc': return name
        i = p[1]; rest = p[2:]
        if rest[0] in ('pre0', 'pre1'):
            if rest[1] == 'conv': return f'cells.{i}.{rest[0]}.1.' + rest[2]
            if rest[1] == 'bn' and rest[0] == 'pre1' or (rest[1] == 'bn' and isinstance(m.cells[int(i)].pre0, nn.Sequential)):
                return f'cells.{i}.{rest[0]}.2.' + '.'.join(rest[2:])
            return f'cells.{i}.{rest[0]}.' + {'conv1': 'c1', 'conv2': 'c2', 'bn': 'bn'}[rest[1]] + '.' + '.'.join(rest[2:])
        e = rest[1]; prim = rest[2]; o = PRIMS.index(prim); tail = rest[3:]
        base = f'cells.{i}.edges.{e}.{o}.'
        if prim.startswith('sep'):
            return base + tail[0] + '.' + {'dw': '1', 'pw': '2', 'bn': '3'}[tail[1]] + '.' + '.'.join(tail[2:])
        if prim.startswith('dil'):
            return base + {'dw': '1', 'pw': '2', 'bn': '3'}[tail[1]] + '.' + '.'.join(tail[2:])
        if prim == 'skip_connect':
            return base + {'conv1': 'c1', 'conv2': 'c2', 'bn': 'bn'}[tail[1]] + '.' + '.'.join(tail[2:])
        return base + '1.' + '.'.join(tail[1:])   # pool's bn
    sd = {tv(k): v for k, v in t.items() if k not in ('xs', 'ys', 'alpha_normal', 'alpha_reduce')}
    own = m.state_dict()
    missing = set(own) - set(sd) - {k for k in own if k.endswith('num_batches_tracked')}
    extra = set(sd) - set(own)
    assert not missing and not extra, (sorted(missing)[:5], sorted(extra)[:5])
    m.load_state_dict(sd, strict=False)
    an = t['alpha_normal'].clone().requires_grad_(); ar = t['alpha_reduce'].clone().requires_grad_()
    def cell_fwd(c, s0, s1, w):
        st = [c.pre0(s0), c.pre1(s1)]
        for node in range(4):
            st.append(sum(w[k][o] * op(st[j]) for k, ((n, j), e) in enumerate(zip(c.spec, c.edges)) if n == node for o, op in enumerate(e)))
        return torch.cat(st[2:], 1)
    m.train()
    s0 = s1 = m.stem(t['xs'])
    wn, wr = F.softmax(an, -1), F.softmax(ar, -1)
    for i, c in enumerate(m.cells):
        red = i in (1, 2)
        s0, s1 = s1, cell_fwd(c, s0, s1, wr if red else wn)
    logits = m.fc(s1.mean((2, 3)))
    loss = F.cross_entropy(logits, t['ys'].long()); loss.backward()
    print('loss', repr(loss.item()))
    params = dict(m.named_parameters())
    for n in ['stem.weight', 'cells.1.edges.0.skip_connect.reduce.conv2.weight', 'cells.2.edges.3.dil_conv_5x5.0.dw.weight', 'cells.0.edges.9.sep_conv_5x5.1.pw.weight', 'cells.2.pre0.conv1.weight', 'cells.2.edges.1.avg_pool_3x3.bn.weight']:
        g = params[tv(n)].grad.flatten(); print(n, [float(x) for x in g[:3]], float(g.abs().max()))
    for n, a in [('alpha_normal', an), ('alpha_reduce', ar)]:
        g = a.grad.flatten(); print(n, [float(x) for x in g[:3]], float(g.abs().max()))
