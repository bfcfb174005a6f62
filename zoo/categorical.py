"""A categorical code inside z ~ N(0, I): category k = argmax(z[:K]), uniform
over the K values because the K normal draws are exchangeable (InfoGAN's
unsupervised category, the semi-supervised AAE's class). Every z a user, a
server or train.evaluate draws is then a draw of the prior, category included."""

import tensorflow as tf

CAPABILITY = "categorical_code"


class CategoricalCode:
    """Mixin of a model whose z starts with a categorical code of `categories`
    (K) values; declares the capability that train.evaluate scores (the
    best-permutation agreement of the category with the classes)."""

    capabilities = frozenset({CAPABILITY})

    def category(self, z):
        """The categorical code argmax(z[:K]) [B] of draws z."""
        return tf.argmax(tf.cast(z, tf.float32)[:, : self.categories], axis=-1, output_type=tf.int32)

    def with_category(self, z, categories):
        """z with its categorical code set to `categories` ([B] ints or one int):
        the largest of z[:K] trades places with z[k], so the K numbers keep
        their distribution given the category."""
        z = tf.cast(z, tf.float32)
        k = self.categories
        if not k:
            raise ValueError(f"this {type(self).__name__} has no categorical code (categories=0)")
        head = z[:, :k]
        target = tf.one_hot(self.as_labels(categories, tf.shape(z)[0]), k) > 0
        current = tf.one_hot(self.category(z), k) > 0
        top = tf.reduce_max(head, axis=-1, keepdims=True)
        at_target = tf.reduce_max(tf.where(target, head, -float("inf")), axis=-1, keepdims=True)
        head = tf.where(target, top, tf.where(current, at_target, head))  # a swap: the same K numbers
        return tf.concat([head, z[:, k:]], axis=-1)

    def one_hot_category(self, z):
        """[one-hot of argmax(z[:K]), z[K:]]: the category as a network reads it."""
        k = self.categories
        z = tf.cast(z, tf.float32)
        if not k:
            return z
        return tf.concat([tf.one_hot(self.category(z), k), z[:, k:]], axis=-1)
