"""SkinCAP data: the reader, disease labels and groups, prompts, images, leak-free splits and their audit.

    from hikari.data import read_skincap, read_split_records, split_dataset, DISEASES, GROUPS
"""

from hikari.utils.lazy import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(__name__, {
    "audit": ("AuditReport", "Overlap", "OVERLAP_KINDS", "audit_pair", "audit_split"),
    "augment": ("Augmenter", "augment_image", "oversample_indices"),
    "hashing": ("ImageHashes", "hash_image", "hash_images", "image_hash",
                "near_duplicate_pairs"),
    "images": ("load_rgb", "to_rgb", "verify_image"),
    "labels": ("ALIASES", "DISEASES", "DISEASE_TO_GROUP", "GROUPS", "UNKNOWN", "clean_disease", "group_of"),
    "prompts": ("STAGE1_PROMPTS", "STAGE2_INFERENCE_PROMPTS", "STAGE2_TRAIN_PROMPTS", "STAGE3_PROMPTS",
                "rag_messages", "stage1_messages", "stage2_messages", "stage2_target", "stage3_messages"),
    "records": ("SkinCapRecord",),
    "skincap": ("SkinCapDataset", "SkinCapFormatError", "read_skincap"),
    "split": ("Split", "SplitInfo", "SplitRecords", "load_split", "make_split", "read_split_records", "select_part",
              "split_dataset"),
})  # fmt: skip
