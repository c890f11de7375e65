"""Writes the tiny ExecuTorch programs of the JUnit tests' tiny bundle (TinyBundle.kt), each about 1.5 KB:

    text_encoder.pte  input_ids (1, 8) int32 -> last_hidden_state (1, 8, 1) float32, all zeros
    unet.pte          sample (1, 3, 4, 4), timestep (1,), encoder_hidden_states (1, 8, 1) -> out_sample = sample / 2
    vae_decoder.pte   latent_sample (1, 3, 4, 4) -> sample = latent_sample
    vae_encoder.pte   sample (1, 3, 4, 4) -> latent_mean = sample / 2, latent_std = 0.25 everywhere (image modes)

the same functions as the tiny ONNX graphs the tests write themselves. Run with the project's venv from this
folder: python make_programs.py
"""
import torch
from executorch.exir import to_edge_transform_and_lower


class TextEncoder(torch.nn.Module):
    def forward(self, input_ids):
        return (input_ids.to(torch.float32) * 0.0).unsqueeze(-1)


class UNet(torch.nn.Module):
    def forward(self, sample, timestep, encoder_hidden_states):
        return sample * 0.5


class Decoder(torch.nn.Module):
    def forward(self, latent_sample):
        return latent_sample * 1.0


class Encoder(torch.nn.Module):
    def forward(self, sample):
        return sample * 0.5, sample * 0.0 + 0.25


def write(name, module, *example):
    program = to_edge_transform_and_lower(torch.export.export(module, example)).to_executorch()
    with open(f"{name}.pte", "wb") as f:
        f.write(program.buffer)


write("text_encoder", TextEncoder(), torch.zeros(1, 8, dtype=torch.int32))
write("unet", UNet(), torch.zeros(1, 3, 4, 4), torch.zeros(1), torch.zeros(1, 8, 1))
write("vae_decoder", Decoder(), torch.zeros(1, 3, 4, 4))
write("vae_encoder", Encoder(), torch.zeros(1, 3, 4, 4))
