"""The cases of tests/mirrored_check.py: case name -> (model name, config; an
image_shape in the config replaces the check's 8x8x1).
A module of their own so that tests can read them without the check's device set-up."""

# The GAN family: case (the model name) -> config.
CASES = {
    "gan": dict(latent_dim=8, d_dropout=0.0, d_steps=2),
    "dcgan": dict(latent_dim=8, d_dropout=0.0),
    "cgan": dict(latent_dim=8, d_dropout=0.0),
}
# Every other case: case -> (model name, config). Fed (images, labels) batches,
# as train.run feeds every model.
OTHER_CASES = {
    # The autoencoders: the VAE's z = mu + L eps with eps sliced from one draw
    # for the global batch, as the GANs' noise (banded posterior, gmm prior and
    # the discretised logistic's two decoder outputs per pixel; recurrent
    # posterior and prior).
    "ae": ("ae", dict(latent_dim=4)),
    "vae": ("vae", dict(latent_dim=4)),
    "cvae_banded_gmm_dlogistic": ("cvae", dict(latent_dim=4, posterior="banded", prior="gmm", prior_components=3,
                                               likelihood="discretized_logistic")),
    "vae_binarized_recurrent": (
        "vae", dict(latent_dim=4, binarize="dynamic", posterior="recurrent", prior="recurrent")
    ),
    # The IWAE objective: K draws of eps per example, cut per replica from one [B_global, K, J] draw.
    "vae_iwae": ("vae", dict(latent_dim=4, objective="iwae", train_k=3)),
    "aae": ("aae", dict(latent_dim=4)),
    "aae_gmm": ("aae", dict(latent_dim=4, prior="gmm", use_labels=True)),
    "bigan": ("bigan", dict(latent_dim=8, d_dropout=0.0)),
    "bigan_mlp": ("bigan", dict(latent_dim=8, d_dropout=0.0, net="mlp")),
    # The moving averages of zoo.ema (model weights too, so compared with the rest).
    "dcgan_ema": ("dcgan", dict(latent_dim=8, d_dropout=0.0, ema_decay=0.5)),
    "bigan_ema": ("bigan", dict(latent_dim=8, d_dropout=0.0, ema_decay=0.5)),
    "aae_ema": ("aae", dict(latent_dim=4, ema_decay=0.5)),
    # The GAN family's discriminator levers: the hinge loss with the R1 penalty,
    # spectral normalisation (its power-iteration vectors are weights, compared
    # with the rest) and DiffAugment (draws of the global batch, sliced).
    "gan_hinge_r1": ("gan", dict(latent_dim=8, d_dropout=0.0, loss="hinge", r1_weight=1.0)),
    "gan_aug_r1": ("gan", dict(latent_dim=8, d_dropout=0.0, augment="cutout,translation", r1_weight=0.5, d_steps=2)),
    "dcgan_sn_aug": ("dcgan", dict(latent_dim=8, d_dropout=0.0, spectral_norm=True, augment="translation,cutout")),
    "cgan_sn": ("cgan", dict(latent_dim=8, d_dropout=0.0, spectral_norm=True)),
    "cgan_g_steps": ("cgan", dict(latent_dim=8, d_dropout=0.0, g_steps=2, update="simultaneous")),
    "bigan_aug": ("bigan", dict(latent_dim=8, d_dropout=0.0, augment="translation,cutout", update="alternating")),
    # The DCGAN-sized nets (zoo.nets): synchronized batch norm in D too, whose
    # step (alternating) passes real and fake images apart.
    # InfoGAN: its codes inside z, Q's loss in D's and G's (both step kinds: d_steps=2, simultaneous).
    "infogan": ("infogan", dict(latent_dim=8, d_dropout=0.0, categories=3, continuous=2, d_steps=2,
                                update="simultaneous")),
    # VAE-GAN: the posterior's eps and the prior's z sliced from global draws, three optimizers
    # from one pass (with the averages); with the equilibrium gating, whose gates are all-reduced.
    "vaegan": ("vaegan", dict(latent_dim=4, ema_decay=0.5)),
    "vaegan_gated": ("vaegan", dict(latent_dim=4, net="mlp", equilibrium_margin=0.05)),
    # The semi-supervised AAE: prior draws and labelled rows cut from global draws, four updates.
    "ssaae": ("ssaae", dict(style_dim=4, net="mlp", labelled=6, labelled_batch=4)),
    # VQ-VAE: step 1 trains the VQ-VAE (EMA statistics all-reduced, or the codebook by its loss),
    # step 2 the prior alone, the idle optimizer's update undone.
    "vqvae": ("vqvae", dict(codebook_size=8, code_dim=3, prior_filters=8, prior_layers=2, vq_steps=1)),
    "vqvae_loss": ("vqvae", dict(codebook_size=8, code_dim=3, prior_filters=8, prior_layers=2, vq_steps=1,
                                 codebook_update="loss")),
    "vqvae_prior": ("vqvae", dict(codebook_size=8, code_dim=3, prior_filters=8, prior_layers=2, vq_steps=0)),
    "gan_conv_32_rgb": ("gan", dict(latent_dim=8, d_dropout=0.0, net="conv", width=0.125, image_shape=(32, 32, 3))),
}


def case(name):
    """(model name, config) of a case."""
    return OTHER_CASES[name] if name in OTHER_CASES else (name, CASES[name])
