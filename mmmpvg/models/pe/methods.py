"""The PE methods as knobs, and the one resolver every caller uses.

The paper's methods differ only in *where* a learnable absolute PE enters a
transformer, so a method is a set of knobs (data in the config), not a copy
of the transformer:

===================  =======  ====  ======  ======  ======================
knob                 default  lape  pvg     mpvg    meaning
===================  =======  ====  ======  ======  ======================
``add_to_input``     True     False True    True    x_0 = patches + pos
                                                    (Eq. 1, 8)
``layerwise``        False    True  True    True    layers get LN'_l(.) at
                                                    the attention input
                                                    (Eq. 6, 9)
``include_layer0``   --       True  False*  False*  layer 0 gets a PE too
``hierarchical``     --       True  True    True    pos_l = LN'_l(pos_l-1),
                                                    else LN'_l(pos_0)
``last_norm_pos``    None     None  None    0       y = LN(x) + LN''(pos_k)
                                                    (Eq. 11)
===================  =======  ====  ======  ======  ======================

(*) A backbone family may change a preset (``pe_preset_overrides``): the
paper puts a PE LN in layer 0 for Swin's PVG and MPVG, and so does CeiT here.

``pos_0`` is the raw (resized) PE; ``pos_k`` (k >= 1) is the PE that enters
layer k (Table 5's notation; ``l`` counts layers across all stages).
"""
from typing import Optional

PE_METHODS = {
    'default': dict(add_to_input=True, layerwise=False, last_norm_pos=None),
    'lape': dict(add_to_input=False, layerwise=True, include_layer0=True,
                 hierarchical=True, last_norm_pos=None),
    'pvg': dict(add_to_input=True, layerwise=True, include_layer0=False,
                hierarchical=True, last_norm_pos=None),
    'mpvg': dict(add_to_input=True, layerwise=True, include_layer0=False,
                 hierarchical=True, last_norm_pos=0),
}
LAYERWISE_KNOBS = ('include_layer0', 'hierarchical')
KNOBS = ('add_to_input', 'layerwise', 'last_norm_pos') + LAYERWISE_KNOBS


def resolve_pe_cfg(pe_cfg: Optional[dict],
                   preset_overrides: Optional[dict] = None,
                   num_layers: Optional[int] = None,
                   with_cls_token: Optional[bool] = None) -> dict:
    """Expand ``dict(method=..., **knobs)`` into every knob, validated.

    Args:
        pe_cfg: The config's ``pe_cfg`` (None is Default).
        preset_overrides: ``{method: {knob: value}}``, how a backbone family
            changes a preset (e.g. Swin's PVG/MPVG with layer 0).
        num_layers: The backbone's layers; checks ``last_norm_pos`` names
            a layer that receives a PE. Skipped when None.
        with_cls_token: Whether the backbone has a class token; Eq. 11
            needs global average pooling. Skipped when None.

    Returns:
        dict: ``method`` and every knob of :data:`KNOBS` (the layer-wise
        knobs are None for a method that is not layer-wise).
    """
    pe_cfg = dict(pe_cfg or {})
    method = pe_cfg.pop('method', 'default')
    if method not in PE_METHODS:
        raise ValueError(f'Unknown PE method {method!r}; choose one of '
                         f'{sorted(PE_METHODS)}.')
    unknown = set(pe_cfg) - set(KNOBS)
    if unknown:
        raise ValueError(f'Unknown PE knob(s) {sorted(unknown)} for method '
                         f'{method!r}; the knobs are {list(KNOBS)}.')
    knobs = dict(PE_METHODS[method])
    knobs.update((preset_overrides or {}).get(method, {}))
    knobs.update(pe_cfg)

    if knobs['layerwise']:
        for name in LAYERWISE_KNOBS:
            knobs.setdefault(name, PE_METHODS['pvg'][name])
    else:
        misplaced = [n for n in LAYERWISE_KNOBS if knobs.get(n) is not None]
        if misplaced:
            raise ValueError(f'PE knob(s) {misplaced} only apply with '
                             '`layerwise=True`.')
        knobs.update(dict.fromkeys(LAYERWISE_KNOBS))
    if not knobs['add_to_input'] and not knobs['layerwise']:
        raise ValueError('PE knobs `add_to_input=False` and '
                         '`layerwise=False` leave the position embedding '
                         'unused.')

    k = knobs['last_norm_pos']
    if k is not None:
        if with_cls_token:
            raise ValueError(
                '`last_norm_pos` (PE in the Last LN, Eq. 11 / MPVG) needs '
                "global average pooling: the paper calls it incompatible "
                "with the class token. Use global_pool='avg'.")
        if num_layers is not None:
            receives = knobs['layerwise'] and (
                knobs['include_layer0'] or k >= 1) and 0 <= k < num_layers
            if k != 0 and not receives:
                raise ValueError(
                    f'`last_norm_pos={k}` names pos_{k}, the PE entering '
                    f'layer {k}, but that layer receives no PE with these '
                    f'knobs (layers 0..{num_layers - 1}).')
    knobs['method'] = method
    return knobs
