"""Window attention for the ViT layers of ViT-Adapter.

ViT-Adapter's ``WindowedAttention`` (``base/vit.py``) projects q, k, v for the
whole image, zero-pads the projected grid up to a multiple of the window,
attends inside each window and crops the padding away before the output
projection. On a grid that is not a multiple of the window the padded
positions therefore take part in the border windows' softmax as keys with
k = 0 (score 0) and v = 0. The rest of the layer (norms, FFN, drop path) runs
on the whole image, so drop path draws one mask per image.
"""
import torch
import torch.nn.functional as F
from mmpretrain.models.utils import MultiheadAttention

WINDOW_PADDINGS = ('zeros', 'masked')


def _to_windows(x: torch.Tensor, window: int) -> torch.Tensor:
    """(B, H, W, C), H and W multiples of ``window`` ->
    (B, nH * nW, window * window, C)."""
    b, h, w, c = x.shape
    x = x.reshape(b, h // window, window, w // window, window, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(b, -1, window * window, c)


def _from_windows(x: torch.Tensor, h: int, w: int,
                  window: int) -> torch.Tensor:
    """Inverse of :func:`_to_windows`."""
    b, _, _, c = x.shape
    x = x.reshape(b, h // window, w // window, window, window, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(b, h, w, c)


class WindowMultiheadAttention(MultiheadAttention):
    """mmpretrain's :class:`MultiheadAttention` restricted to non-overlapping
    windows of the token grid (same parameters, so checkpoints load either
    way).

    Args:
        window_size (int): Window side in tokens.
        window_padding (str): How a grid that is not a multiple of the window
            is completed. ``'zeros'`` (ViT-Adapter): q, k, v are zero-padded
            after the projection and the padded keys take part in the
            softmax. ``'masked'``: the padded keys are masked out, i.e. the
            border windows are smaller windows of real tokens only.
        **kwargs: Arguments of :class:`MultiheadAttention`.
    """
    # The layer passes the token grid (``forward(x, hw_shape)``).
    needs_hw_shape = True

    def __init__(self, *args, window_size: int, window_padding: str = 'zeros',
                 **kwargs):
        super().__init__(*args, **kwargs)
        if not (isinstance(window_size, int) and window_size > 0):
            raise ValueError(f'window_size must be a positive int, got '
                             f'{window_size!r}.')
        if window_padding not in WINDOW_PADDINGS:
            raise ValueError(f'window_padding must be one of '
                             f'{WINDOW_PADDINGS}, got {window_padding!r}.')
        if self.v_shortcut:
            raise ValueError('WindowMultiheadAttention has no v_shortcut.')
        self.window_size = window_size
        self.window_padding = window_padding

    def forward(self, x: torch.Tensor, hw_shape) -> torch.Tensor:
        """x: (B, h * w, C) tokens of an (h, w) grid, row-major."""
        b, n, _ = x.shape
        h, w = hw_shape
        if n != h * w:
            raise ValueError(f'Window attention got {n} tokens for a {h}x{w} '
                             'grid.')
        window = self.window_size
        pad_h, pad_w = -h % window, -w % window
        qkv = F.pad(self.qkv(x).reshape(b, h, w, -1),
                    (0, 0, 0, pad_w, 0, pad_h))
        qkv = _to_windows(qkv, window)  # (B, nW, window^2, 3C)
        num_windows = qkv.shape[1]
        qkv = qkv.reshape(b * num_windows, window * window, 3, self.num_heads,
                          self.head_dims).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]  # (B * nW, heads, window^2, dims)

        mask = None
        if self.window_padding == 'masked' and (pad_h or pad_w):
            real = F.pad(x.new_ones(1, h, w, 1), (0, 0, 0, pad_w, 0, pad_h))
            # (B * nW, 1, 1, window^2): True where a key is a real token.
            mask = _to_windows(real, window)[0, :, None, None, :, 0].bool()
            mask = mask.repeat(b, 1, 1, 1)
        attn_drop = self.attn_drop if self.training else 0.
        out = self.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=attn_drop)
        out = out.transpose(1, 2).reshape(b, num_windows, window * window,
                                          self.embed_dims)
        out = _from_windows(out, h + pad_h, w + pad_w, window)
        out = out[:, :h, :w].reshape(b, n, self.embed_dims)
        out = self.proj(out)
        return self.out_drop(self.gamma1(self.proj_drop(out)))
