"""The train step: train@<arch>-<init>.

* ``models``       ResNet-18/50 with a 5-way fc; ImageNet weights, never faked
* ``device``       cpu/cuda choice, bf16 autocast, channels_last
* ``inputs``       arrays -> normalised, flipped batches on the device; loaders
* ``augment``      train.augment: field, the field's augmentation, per batch on the device
* ``recipe``       the phases of a run and its optimiser settings
* ``optim``        the optimizer and learning-rate schedule of a phase
* ``averaging``    train.ema: the moving average of the weights
* ``loop``         one training epoch, scoring, stored features
* ``phases``       what each phase trains and on which batches
* ``fit``          the whole run: history, the epoch chosen on validation
* ``resume``       the state saved after every epoch, and picking it up
* ``checkpoints``  the model files that evaluate reads
"""
