"""Run folders: their layout (:mod:`medfuse.runs.layout` names every file) and the stages that read and write
them: train and evaluate (:mod:`~medfuse.runs.stages`), compare, the report and the export to a model bundle."""
