"""The paper's experiments: each analysis turns runs into numbers (JSON); figures.py and
report.py turn the numbers into pictures and prose."""
